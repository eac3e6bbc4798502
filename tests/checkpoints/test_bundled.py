"""Weights shipped with the package (``pyg_unimol2/weights/``): writing an
entry from a pretraining checkpoint (:func:`ship_weights`), and the shipped
``small-moses`` backbone by name, offline (``from_pretrained``, ``hub:``,
``finetune --pretrained``, ``embed``)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch
from torch_geometric.data import Batch

from pyg_unimol2.checkpoints import load_backbone, pretrain_state
from pyg_unimol2.checkpoints.bundled import (WEIGHTS_DIR, bundled_file,
                                             bundled_weights, ship_weights)
from pyg_unimol2.checkpoints.hub import download_weights, hub_file
from pyg_unimol2.data import from_smiles, to_dense
from pyg_unimol2.errors import ConfigError
from pyg_unimol2.models import UniMol2

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = 'small-moses'


def _cls(model: UniMol2, smiles: str) -> torch.Tensor:
    dense = to_dense(Batch.from_data_list([from_smiles(smiles, seed=0)]))
    with torch.no_grad():
        return model.eval()(dense).cls[0]


def test_ship_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = UniMol2.from_preset('80K')
    torch.save(pretrain_state(model, step=7), tmp_path / 'step_7.pt')
    path = ship_weights(tmp_path / 'step_7.pt', 'mine', dict(valid_loss=1.5),
                        directory=tmp_path / 'weights')
    entry = bundled_weights(tmp_path / 'weights')['mine']
    assert entry['preset'] == '80K' and entry['valid_loss'] == 1.5
    assert entry['dtype'] == 'float16' and entry['bytes'] == \
        path.stat().st_size
    assert bundled_file('MINE', tmp_path / 'weights') == path
    assert bundled_file('other', tmp_path / 'weights') is None
    shipped = load_backbone(path)
    assert shipped.lm_head is None  # the masked-atom head is not shipped
    for name, p in shipped.state_dict().items():
        assert p.dtype == torch.float32, name  # rounded back on loading
        torch.testing.assert_close(p, model.state_dict()[name].half().float())
    a, b = _cls(model, 'CC(=O)Nc1ccc(O)cc1'), _cls(shipped, 'CC(=O)Nc1ccc(O)cc1')
    assert float((a - b).abs().max() / a.abs().max()) < 1e-2


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match='shipped with the package: '
                       + SHIPPED):
        hub_file('no-such-weights')


def test_shipped_weights_are_small_and_documented():
    entry = bundled_weights()[SHIPPED]
    path = WEIGHTS_DIR / entry['file']
    assert path.is_file() and path.stat().st_size < 8 * 2**20
    assert entry['preset'] == 'small' and entry['valid_loss'] > 0
    assert 'scaling_study.py' in entry['recipe']
    readme = (ROOT / 'README.md').read_text()
    assert SHIPPED in readme and f'{entry["valid_loss"]:.3f}' in readme


def test_shipped_weights_by_name_offline(tmp_path):
    assert download_weights(SHIPPED) == WEIGHTS_DIR / f'{SHIPPED}.pt'
    model = UniMol2.from_pretrained(SHIPPED)
    assert model.config.name == 'small' and model.lm_head is None
    by_hub = load_backbone(f'hub:{SHIPPED}')
    by_name = load_backbone(SHIPPED)
    for a, b in zip(by_hub.parameters(), by_name.parameters()):
        assert torch.equal(a, b)
    # embed with it, in a fresh process with the Hub unreachable
    smi = tmp_path / 'mols.smi'
    smi.write_text('CCO\nc1ccccc1O\n')
    out = tmp_path / 'emb.h5'
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'))
    subprocess.run([sys.executable, '-m', 'pyg_unimol2.cli', 'embed',
                    '--checkpoint', SHIPPED, '--input', str(smi), '--out',
                    str(out), '--workers', '1'], check=True, env=env,
                   capture_output=True)
    with h5py.File(out) as f:
        assert f['cls'].shape == (2, model.config.embed_dim)
        cls = torch.from_numpy(f['cls'][1])
    torch.testing.assert_close(cls, _cls(model, 'c1ccccc1O'), rtol=1e-4,
                               atol=1e-4)
