"""Official weights by name (``UniMol2.from_pretrained``, ``hub:NAME``),
offline: a Hugging Face cache laid out as ``hf_hub_download`` leaves it
(blob, snapshot symlink, ``refs/main``) holds a tiny official-layout
checkpoint; ``HF_HOME`` points at it and ``HF_HUB_OFFLINE=1``.

huggingface_hub reads ``HF_HOME`` and ``HF_HUB_OFFLINE`` when imported, so
the cases that go through its cache run in subprocesses, two at a time,
started together by a module fixture (one for the fast cases, one for the
``slow`` ones, which take the same code path through another name or
command); ``UNIMOL2_WEIGHT_DIR`` is read at each call and is tested in this
process."""
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pyg_unimol2.checkpoints import load_backbone, read_checkpoint
from pyg_unimol2.checkpoints.hub import (REPO_ID, SIZES, WEIGHT_DIR_ENV,
                                         hub_file)
from pyg_unimol2.cli import main
from pyg_unimol2.errors import EXIT_USER_ERROR, ConfigError
from pyg_unimol2.models import UniMol2, save_official

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, '-m', 'pyg_unimol2.cli']
FILE = 'modelzoo/84M/checkpoint.pt'
COMMIT = '5f2b3c9d0e1a4b6c8d7e9f0a1b2c3d4e5f6a7b8c'
SMILES = 'CCO\nc1ccccc1O\nCC(=O)Nc1ccc(O)cc1\n'


def _hf_cache(home: Path, filename: str, payload: bytes) -> Path:
    """The cache of ``HF_HOME=home`` holding :obj:`filename` of
    :data:`REPO_ID` as hf_hub_download leaves it; returns the snapshot
    path."""
    repo = home / 'hub' / ('models--' + REPO_ID.replace('/', '--'))
    blob = repo / 'blobs' / hashlib.sha256(payload).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(payload)
    link = repo / 'snapshots' / COMMIT / filename
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(COMMIT)
    return link


@pytest.fixture(scope='module')
def official(tmp_path_factory):
    """``(model, path)``: a tiny model (with its masked-atom head) saved
    in the official Uni-Core layout."""
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny', num_layers=2).eval()
    path = tmp_path_factory.mktemp('official') / 'checkpoint.pt'
    save_official(model, path)
    return model, path


def _same_weights(model: UniMol2, reference: UniMol2) -> None:
    state, ref = model.state_dict(), reference.state_dict()
    assert state.keys() == ref.keys()
    for key in ref:
        assert torch.equal(state[key], ref[key]), key


@pytest.fixture(scope='module')
def hub(official, tmp_path_factory):
    """``(tmp, cases)``: a directory with the Hugging Face cache ``hf``
    and the input files, and ``{case: (command, environment)}``."""
    tmp = tmp_path_factory.mktemp('hub')
    _hf_cache(tmp / 'hf', FILE, official[1].read_bytes())
    (tmp / 'mols.smi').write_text(SMILES)
    (tmp / 'labels.csv').write_text('smiles,y\nCCO,1.0\nCCC,2.0\nCCN,3.0\n')
    env = dict(os.environ, HF_HOME=str(tmp / 'hf'), HF_HUB_OFFLINE='1')
    env.pop('HF_HUB_CACHE', None)
    env.pop(WEIGHT_DIR_ENV, None)
    embed = CLI + ['embed', '--smiles', str(tmp / 'mols.smi'), '--workers',
                   '1', '--checkpoint']
    return tmp, env, {
        'from_pretrained': [
            sys.executable, '-c',
            'import sys, torch; from pyg_unimol2.models import UniMol2; '
            "torch.save(UniMol2.from_pretrained('84M').state_dict(), "
            'sys.argv[1])', str(tmp / 'state.pt')],
        'embed_size': embed + ['hub:84M', '--out', str(tmp / 'size.h5')],
        'embed_missing': embed + ['hub:164M', '--out', str(tmp / 'no.h5')],
        'embed_file': embed + [f'hub:{REPO_ID}/{FILE}', '--out',
                               str(tmp / 'file.h5')],
        'finetune_missing': CLI + [
            'finetune', '--data', str(tmp / 'labels.csv'), '--targets',
            'y:regression', '--pretrained', 'hub:1.1B', '--out',
            str(tmp / 'run')],
    }


def _run_all(hub, names) -> dict:
    """``{case: CompletedProcess}`` of :obj:`names`, two at a time."""
    tmp, env, cases = hub

    def run(name):
        return subprocess.run(cases[name], cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(names, pool.map(run, names)))


@pytest.fixture(scope='module')
def fast_runs(hub):
    return _run_all(hub, ['from_pretrained', 'embed_size', 'embed_missing'])


@pytest.fixture(scope='module')
def slow_runs(hub):
    return _run_all(hub, ['embed_file', 'finetune_missing'])


def test_from_pretrained_reads_the_hub_cache(hub, fast_runs, official):
    result = fast_runs['from_pretrained']
    assert result.returncode == 0, result.stderr
    model, path = official
    state = torch.load(hub[0] / 'state.pt')
    assert not any(key.startswith('lm_head.') for key in state)
    expected = {k: v for k, v in model.state_dict().items()
                if not k.startswith('lm_head.')}
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    direct = load_backbone(str(path)).state_dict()
    assert direct.keys() == state.keys()
    assert all(torch.equal(state[k], direct[k]) for k in direct)


def _check_embedding(hub, result, name: str, source: str,
                     official) -> None:
    """The embedding of ``unimol2 embed --checkpoint SOURCE`` (written to
    ``NAME.h5``) equals that of the checkpoint file itself."""
    tmp = hub[0]
    assert result.returncode == 0, result.stderr
    assert 'wrote 3 molecules' in result.stdout
    direct = tmp / f'{name}_direct.h5'
    main(['embed', '--checkpoint', str(official[1]), '--smiles',
          str(tmp / 'mols.smi'), '--workers', '1', '--out', str(direct)])
    with h5py.File(direct) as f, h5py.File(tmp / f'{name}.h5') as g:
        assert f['cls'].shape == (3, official[0].config.embed_dim)
        assert g.attrs['checkpoint'] == source
        for key in ('cls', 'atoms'):
            np.testing.assert_allclose(g[key][:], f[key][:], rtol=1e-5,
                                       atol=1e-6)


def test_embed_hub_size(hub, fast_runs, official):
    _check_embedding(hub, fast_runs['embed_size'], 'size', 'hub:84M',
                     official)


@pytest.mark.slow
def test_embed_hub_file(hub, slow_runs, official):
    _check_embedding(hub, slow_runs['embed_file'], 'file',
                     f'hub:{REPO_ID}/{FILE}', official)


def _check_missing(hub, result, file: str) -> None:
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert 'Traceback' not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith('unimol2: error: official weights ')
    for words in (file, REPO_ID, str(hub[0] / 'hf' / 'hub'),
                  'HF_HUB_OFFLINE is set', f'hf download {REPO_ID} {file}',
                  WEIGHT_DIR_ENV):
        assert words in line, (words, line)


def test_offline_missing_weights_name_repo_and_file(hub, fast_runs):
    _check_missing(hub, fast_runs['embed_missing'],
                   'modelzoo/164M/checkpoint.pt')


@pytest.mark.slow
def test_finetune_offline_missing_weights(hub, slow_runs):
    _check_missing(hub, slow_runs['finetune_missing'],
                   'modelzoo/1.1B/checkpoint.pt')


def test_weight_dir_override(official, tmp_path, monkeypatch):
    model, path = official
    target = tmp_path / FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    monkeypatch.setenv(WEIGHT_DIR_ENV, str(tmp_path))
    loaded = UniMol2.from_pretrained('84m', heads=True)
    _same_weights(loaded, model)
    assert torch.equal(read_checkpoint(f'hub:{REPO_ID}/{FILE}')['model'][
        'lm_head.weight'], model.lm_head.weight)
    (tmp_path / 'mols.smi').write_text(SMILES)
    main(['embed', '--checkpoint', 'hub:84M', '--smiles',
          str(tmp_path / 'mols.smi'), '--workers', '1', '--out',
          str(tmp_path / 'emb.h5')])
    with h5py.File(tmp_path / 'emb.h5') as f:
        assert f['cls'].shape == (3, model.config.embed_dim)


def test_names():
    assert hub_file('84M') == (REPO_ID, FILE)
    assert hub_file('1.1b') == (REPO_ID, 'modelzoo/1.1B/checkpoint.pt')
    assert hub_file('me/fork/v2/model.pt') == ('me/fork', 'v2/model.pt')
    for name in ('85M', 'dptech/Uni-Mol2', 'tiny'):
        with pytest.raises(ConfigError, match=', '.join(SIZES)):
            UniMol2.from_pretrained(name)
    with pytest.raises(ConfigError, match="'42M'"):
        read_checkpoint('hub:42M')
