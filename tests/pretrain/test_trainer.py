import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import (finish_torchrun, kill_torchrun_at, read_metrics,
                      read_moses)
from torch_geometric.data import Batch

from pyg_unimol2.data import from_smiles, to_dense
from pyg_unimol2.models import UniMol2
from pyg_unimol2.pretrain import ObjectiveConfig, PretrainConfig, corrupt
from pyg_unimol2.checkpoints import list_checkpoints
from pyg_unimol2.pretrain.trainer import pretrain, train_step

REPO = Path(__file__).resolve().parents[2]
COMPARED = ('loss', 'atom', 'coord', 'dist', 'acc', 'grad_norm', 'lr',
            'molecules', 'padding', 'skipped', 'skipped_steps',
            'valid_loss', 'valid_atom', 'valid_coord', 'valid_dist',
            'valid_acc')


def _batches(seed: int, poison: bool = False):
    molecules = [from_smiles(s, seed=0, optimize=False)
                 for s in read_moses(8)]
    out = []
    for k, part in enumerate((molecules[:4], molecules[4:])):
        batch = corrupt(to_dense(Batch.from_data_list(part)),
                        ObjectiveConfig(),
                        torch.Generator().manual_seed(seed + k))
        if poison and k == 1:
            batch.inputs.pos[0, 0, 0] = float('nan')
        out.append(batch)
    return out


def _setup_model():
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny')
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    return model, optimizer, scaler


def test_non_finite_step_is_skipped():
    model, optimizer, scaler = _setup_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = train_step(model, optimizer, scaler, _batches(0, poison=True),
                         ObjectiveConfig(), clip_norm=1.0)
    assert metrics['skipped'] == 1.0
    assert all(torch.equal(before[k], v)
               for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert optimizer.state_dict()['state'] == {}
    metrics = train_step(model, optimizer, scaler, _batches(1),
                         ObjectiveConfig(), clip_norm=1.0)
    assert metrics['skipped'] == 0.0
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics['molecules'] == 8 and 0 <= metrics['padding'] < 1
    assert not torch.equal(before['embed_tokens.weight'],
                           model.embed_tokens.weight)


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_mixed_precision_step(precision):
    model, optimizer, _ = _setup_model()
    scaler = torch.amp.GradScaler('cpu', enabled=precision == 'fp16')
    metrics = train_step(model, optimizer, scaler, _batches(0),
                         ObjectiveConfig(), 1.0, precision)
    assert metrics['skipped'] == 0.0
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    if precision == 'fp16':
        scale = scaler.get_scale()
        metrics = train_step(model, optimizer, scaler,
                             _batches(1, poison=True), ObjectiveConfig(),
                             1.0, precision)
        assert metrics['skipped'] == 1.0
        assert scaler.get_scale() == scale * scaler.get_backoff_factor()


def _ddp_worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=2)
    model, optimizer, scaler = _setup_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    skipped = []
    # Step 0: only rank 1 sees a NaN; step 1: clean on both ranks.
    for step, poison in enumerate((rank == 1, False)):
        metrics = train_step(ddp, optimizer, scaler,
                             _batches(10 * rank + step, poison),
                             ObjectiveConfig(), clip_norm=1.0)
        skipped.append(metrics['skipped'])
    weights = model.embed_tokens.weight.detach().clone()
    torch.save(dict(skipped=skipped, weights=weights), f'{out}.{rank}')
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_skip_together(tmp_path):
    torch.multiprocessing.spawn(
        _ddp_worker, args=(str(tmp_path / 'init'), str(tmp_path / 'out')),
        nprocs=2)
    r0, r1 = (torch.load(tmp_path / f'out.{r}') for r in (0, 1))
    assert r0['skipped'] == r1['skipped'] == [1.0, 0.0]
    assert torch.equal(r0['weights'], r1['weights'])


def test_single_process_run(store, tmp_path):
    config = PretrainConfig(
        store=str(store), out=str(tmp_path / 'run'), preset='tiny',
        max_steps=4, warmup_steps=2, lr=5e-4, max_tokens=160,
        valid_fraction=0.1, valid_every=2, ckpt_every=2, log_every=1,
        accumulation=2, progress=False,
        objective=ObjectiveConfig.official())  # with 2D coordinates
    result = pretrain(config)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.values())
    assert result['skipped_steps'] == 0 and result['valid_molecules'] > 0
    lines = read_metrics(tmp_path / 'run')
    assert [r['step'] for r in lines if 'loss' in r] == [1, 2, 3, 4]
    assert [r['step'] for r in lines if 'valid_loss' in r] == [2, 4]
    assert [p.name for p in list_checkpoints(tmp_path / 'run' /
                                     'checkpoints')] == \
        ['step_00000002.pt', 'step_00000004.pt']
    assert any(p.name.startswith('events') for p in
               (tmp_path / 'run' / 'tb').iterdir())


def _torchrun(store: Path, out: Path, max_steps: int) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node=2', '-m', 'pyg_unimol2.pretrain',
           '--store', str(store), '--out', str(out), '--preset', 'tiny',
           '--max-steps', str(max_steps), '--warmup-steps', '3',
           '--lr', '5e-4', '--max-tokens', '160', '--valid-fraction', '0.1',
           '--valid-every', '4', '--ckpt-every', '1', '--threads', '1',
           '--no-progress']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_ddp_sigkill_resume_reproduces_trajectory(store, tmp_path):
    steps = 14
    finish_torchrun(_torchrun(store, tmp_path / 'ref', steps))

    proc = _torchrun(store, tmp_path / 'killed', steps)
    ckpt = tmp_path / 'killed' / 'checkpoints'
    kill_torchrun_at(proc, ckpt / 'step_00000006.pt')
    killed_at = max(int(p.stem[5:]) for p in list_checkpoints(ckpt))
    assert 6 <= killed_at < steps

    finish_torchrun(_torchrun(store, tmp_path / 'killed', steps))
    ref, resumed = read_metrics(tmp_path / 'ref'), read_metrics(tmp_path / 'killed')
    assert [sorted(r) for r in ref] == [sorted(r) for r in resumed]
    assert len([r for r in ref if 'loss' in r]) == steps
    for a, b in zip(ref, resumed):
        assert a['step'] == b['step']
        for key in COMPARED:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-6,
                                       abs=1e-9), (a['step'], key)
    # Losses of later steps really differ from earlier ones (not constant).
    train = [r for r in ref if 'loss' in r]
    assert train[0]['loss'] != train[-1]['loss']
    names = [p.name for p in list_checkpoints(ckpt)]
    assert names == [f'step_{s:08d}.pt' for s in range(steps - 9, steps + 1)]
    assert not list(ckpt.glob('*.tmp'))
