"""Joint multi-domain energy/force pretraining (JMP) through the one
pretraining loop: two domains (ANI-1x and SPICE layouts), a head set per
domain, checkpoints that feed fine-tuning, and exact resume of a 2-process
torchrun killed with SIGKILL."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import finish_torchrun, kill_torchrun_at, read_metrics
from geometry_files import write_ani1x, write_spice

from pyg_unimol2.checkpoints import (list_checkpoints, load_backbone,
                                     read_checkpoint)
from pyg_unimol2.data.store import build_geometry_store
from pyg_unimol2.errors import ConfigError
from pyg_unimol2.pretrain import PretrainConfig
from pyg_unimol2.pretrain.trainer import pretrain

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp('jmp')
    write_ani1x(root / 'ani1x-release.h5', count=10)
    write_spice(root / 'SPICE-2.0.1.hdf5', count=8)
    for name, file in (('ani', 'ani1x-release.h5'),
                       ('spice', 'SPICE-2.0.1.hdf5')):
        build_geometry_store(root / file, root / name, workers=1,
                             shard_size=16, progress=False, verbose=False)
    return [dict(name='ani', store=str(root / 'ani'), force='direct'),
            dict(name='spice', store=str(root / 'spice'),
                 force='conservative', force_loss='mae', weight=0.5)]


def _config(domains, out: Path, **kwargs) -> PretrainConfig:
    settings = dict(preset='tiny', max_steps=6, warmup_steps=2, lr=5e-4,
                    max_tokens=120, valid_fraction=0.3, valid_every=3,
                    ckpt_every=3, progress=False, threads=1)
    settings.update(kwargs)
    return PretrainConfig(out=str(out), domains=domains, **settings)


def test_joint_run_trains_a_head_set_per_domain(domains, tmp_path):
    result = pretrain(_config(domains, tmp_path / 'run'))
    for key in ('loss', 'energy_mae', 'force_mae', 'valid_loss',
                'valid_ani_energy_mae', 'valid_spice_force_mae'):
        assert torch.isfinite(torch.tensor(result[key])), key
    assert result['skipped_steps'] == 0
    lines = [json.loads(line) for line in
             (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in lines if 'loss' in r] == list(range(1, 7))
    ckpt = read_checkpoint(list_checkpoints(tmp_path / 'run' /
                                            'checkpoints')[-1])
    assert ckpt['energy_force']['force_modes'] == {'ani': 'direct',
                                                   'spice': 'conservative'}
    # The reference energies were fitted per domain (JMP): they differ.
    heads = ckpt['energy_force']['heads']
    assert not torch.equal(heads['ani.reference'], heads['spice.reference'])
    # Any consumer of pretraining checkpoints reads the backbone.
    backbone = load_backbone(ckpt)
    assert backbone.config.name == 'tiny'


def test_domain_table_errors_name_the_problem(domains, tmp_path):
    with pytest.raises(ConfigError, match='unknown keys'):
        pretrain(_config([dict(domains[0], stroe='x')], tmp_path / 'a'))
    with pytest.raises(ConfigError, match='force must be one of'):
        pretrain(_config([dict(domains[0], force='magic')], tmp_path / 'b'))
    with pytest.raises(ConfigError, match='repeat'):
        pretrain(_config([domains[0], domains[0]], tmp_path / 'c'))


def _torchrun(config: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node=2', '-m', 'pyg_unimol2.pretrain',
           '--config', str(config), '--out', str(out), '--no-progress']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_domain_ddp_sigkill_resume_repeats_losses(domains, tmp_path):
    steps = 10
    config = tmp_path / 'jmp.json'
    config.write_text(json.dumps(dict(
        preset='tiny', max_steps=steps, warmup_steps=2, lr=5e-4,
        max_tokens=120, valid_fraction=0.3, valid_every=4, ckpt_every=1,
        threads=1, domains=domains)))
    finish_torchrun(_torchrun(config, tmp_path / 'ref'))
    proc = _torchrun(config, tmp_path / 'killed')
    ckpt = tmp_path / 'killed' / 'checkpoints'
    kill_torchrun_at(proc, ckpt / 'step_00000004.pt')
    killed_at = max(int(p.stem[5:]) for p in list_checkpoints(ckpt))
    assert 4 <= killed_at < steps
    finish_torchrun(_torchrun(config, tmp_path / 'killed'))

    ref = read_metrics(tmp_path / 'ref')
    resumed = read_metrics(tmp_path / 'killed')
    assert [r['step'] for r in ref] == [r['step'] for r in resumed]
    for a, b in zip(ref, resumed):
        for key in ('loss', 'energy_mae', 'force_mae', 'valid_loss'):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-6), (a['step'],
                                                                   key)
    train = [r['loss'] for r in ref if 'loss' in r]
    assert len(train) == steps and train[0] != train[-1]


def test_fine_tuning_on_a_new_domain_keeps_or_replaces_heads(domains,
                                                             tmp_path):
    from geometry_files import write_rmd17

    from pyg_unimol2.checkpoints import load_energy_force_model
    from pyg_unimol2.datasets.hdf5 import HDF5MoleculeDataset
    from pyg_unimol2.pretrain.energy_force import collate

    pretrain(_config(domains, tmp_path / 'pre'))
    pretrained = list_checkpoints(tmp_path / 'pre' / 'checkpoints')[-1]
    write_rmd17(tmp_path / 'rmd17_a.npz', count=12)
    write_rmd17(tmp_path / 'rmd17_b.npz', count=4)
    for name in ('a', 'b'):
        build_geometry_store(tmp_path / f'rmd17_{name}.npz',
                             tmp_path / f'md_{name}', workers=1,
                             progress=False, verbose=False)
    target = dict(name='md', store=str(tmp_path / 'md_a'),
                  valid_store=str(tmp_path / 'md_b'), force='direct')
    kept = _config([target], tmp_path / 'kept', init_from=str(pretrained),
                   keep_heads={'md': 'ani'}, layer_decay=0.8, ema_decay=0.9,
                   max_steps=1, lr=1e-12)
    result = pretrain(kept)
    # One step at lr 1e-12: the kept heads predict what the pretrained
    # 'ani' heads predict, statistics included (no drop at step 0).
    source = load_energy_force_model(pretrained).eval()
    tuned = load_energy_force_model(list_checkpoints(
        tmp_path / 'kept' / 'checkpoints')[-1]).eval()
    batch = collate([(0, HDF5MoleculeDataset(tmp_path / 'md_b')[i])
                     for i in range(4)])
    e_source, f_source = source(batch.inputs, 'ani')
    e_tuned, f_tuned = tuned(batch.inputs, 'md')
    assert torch.allclose(e_tuned, e_source, rtol=1e-5)
    assert torch.allclose(f_tuned, f_source, rtol=1e-4, atol=1e-6)
    assert 'valid_md_force_mae' in result
    with pytest.raises(ConfigError, match="no domain 'nope'"):
        pretrain(_config([target], tmp_path / 'x', init_from=str(pretrained),
                         keep_heads={'md': 'nope'}))
    fresh = pretrain(_config([target], tmp_path / 'fresh',
                             init_from=str(pretrained), max_steps=2))
    assert torch.isfinite(torch.tensor(fresh['valid_md_energy_mae']))
