"""FSDP pretraining (``--fsdp``) on 2 gloo processes: the same losses as
DDP, sharded checkpoints that resume exactly after SIGKILL and fall back
past a damaged one, and a consolidated checkpoint for fine-tuning."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from conftest import finish_torchrun, kill_torchrun_at, read_metrics
from test_trainer import _batches

from pyg_unimol2.checkpoints import (CheckpointError, list_checkpoints,
                                     load_backbone)
from pyg_unimol2.errors import ConfigError
from pyg_unimol2.models import UniMol2
from pyg_unimol2.pretrain import ObjectiveConfig, PretrainConfig
from pyg_unimol2.pretrain.sharding import (ShardedCheckpoints, check_fsdp,
                                           consolidate,
                                           list_sharded_checkpoints,
                                           shard_model,
                                           verify_sharded_checkpoint)
from pyg_unimol2.pretrain.trainer import train_step
from pyg_unimol2.train.ema import ExponentialMovingAverage

REPO = Path(__file__).resolve().parents[2]
STEPS = 8
#: Per-step metrics compared between runs (``molecules_per_s`` is timing).
TRAIN = ('loss', 'atom', 'coord', 'dist', 'acc', 'grad_norm', 'lr',
         'molecules', 'padding', 'skipped')
VALID = ('valid_loss', 'valid_atom', 'valid_coord', 'valid_dist',
         'valid_acc')


def _training():
    """A tiny model with AdamW, a decaying schedule, a scaler and an
    EMA."""
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny')
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda s: 1.0 / (s + 1))
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    return model, optimizer, scheduler, scaler, \
        ExponentialMovingAverage(model, 0.9)


def _step(model, optimizer, scheduler, scaler, ema, seed: int) -> None:
    torch.manual_seed(seed)  # dropout, as the trainer seeds it per step
    metrics = train_step(model, optimizer, scaler, _batches(seed),
                         ObjectiveConfig(), clip_norm=1.0)
    assert metrics['skipped'] == 0.0
    scheduler.step()
    if ema is not None:
        ema.update()


def _clone(state: Dict) -> Dict:
    return {k: v.detach().clone() for k, v in state.items()}


def test_sharded_checkpoints_resume_newest_intact(tmp_path):
    """One process, no process group: the checkpoint format, pruning,
    integrity and exact restore of every piece of state."""
    ckpt = tmp_path / 'checkpoints'
    (ckpt / 'step_00000009.tmp').mkdir(parents=True)  # a killed write
    parts = _training()
    checkpoints = ShardedCheckpoints(ckpt, 2, *parts)
    assert not (ckpt / 'step_00000009.tmp').exists()
    saved = {}
    for step in (1, 2, 3):
        _step(*parts, seed=step)
        checkpoints.save(step, epoch=0, position=step, skipped=0)
        saved[step] = (_clone(parts[0].state_dict()),
                       _clone(parts[4].shadow),
                       parts[1].state_dict()['state'][0]['exp_avg'].clone())
    assert [p.name for p in list_sharded_checkpoints(ckpt)] == \
        ['step_00000002', 'step_00000003']
    assert not list(ckpt.glob('*.tmp'))
    manifest = json.loads((ckpt / 'step_00000003' / 'manifest.json')
                          .read_text())
    assert sorted(manifest['files']) == ['.metadata', '__0_0.distcp',
                                         'train_state.pt']

    # Flip one byte of the newest shard file: resume falls back to step 2.
    shard = ckpt / 'step_00000003' / '__0_0.distcp'
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='__0_0.distcp is damaged'):
        verify_sharded_checkpoint(shard.parent)

    fresh = _training()
    with pytest.warns(UserWarning, match='step_00000003 is damaged'):
        state = ShardedCheckpoints(ckpt, 2, *fresh).resume()
    assert (state['step'], state['epoch'], state['position'],
            state['skipped'], state['world_size']) == (2, 0, 2, 0, 1)
    model_state, ema_state, exp_avg = saved[2]
    assert all(torch.equal(model_state[k], v)
               for k, v in fresh[0].state_dict().items())
    assert all(torch.equal(ema_state[k], v)
               for k, v in fresh[4].shadow.items())
    assert torch.equal(fresh[1].state_dict()['state'][0]['exp_avg'],
                       exp_avg)
    assert fresh[2].get_last_lr() == pytest.approx([1e-3 / 3])
    # From step 2 the restored run takes the original's step 3.
    _step(*fresh, seed=3)
    model_state, ema_state, exp_avg = saved[3]
    assert all(torch.equal(model_state[k], v)
               for k, v in fresh[0].state_dict().items())
    assert all(torch.equal(ema_state[k], v)
               for k, v in fresh[4].shadow.items())

    # Truncated and manifest-less checkpoints are passed over too.
    (ckpt / 'step_00000002' / '__0_0.distcp').write_bytes(b'')
    with pytest.raises(CheckpointError, match='has 0 bytes'):
        verify_sharded_checkpoint(ckpt / 'step_00000002')
    with pytest.warns(UserWarning):
        assert ShardedCheckpoints(ckpt, 2, *_training()).resume() is None


def test_consolidate_single_process(tmp_path):
    parts = _training()
    _step(*parts, seed=0)
    checkpoints = ShardedCheckpoints(tmp_path / 'checkpoints', 1, *parts)
    path = checkpoints.save(1, epoch=0, position=1, skipped=0)
    out = consolidate(path, tmp_path / 'model.pt')
    full = torch.load(out, weights_only=False)
    assert full['format'] == 'pyg_unimol2.pretrain' and full['step'] == 1
    assert all(torch.equal(full['ema'][k], v)
               for k, v in parts[4].shadow.items())
    backbone = load_backbone(out, heads=True)
    assert all(torch.equal(parts[0].state_dict()[k], v)
               for k, v in backbone.state_dict().items())
    assert backbone.state_dict().keys() == parts[0].state_dict().keys()
    with pytest.raises(CheckpointError, match='not a sharded checkpoint'):
        consolidate(tmp_path, tmp_path / 'x.pt')


def test_check_fsdp_refuses_what_cannot_run(tmp_path, monkeypatch):
    ckpt = tmp_path / 'checkpoints'
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    fsdp = PretrainConfig(store='s', preset='tiny', fsdp=True)
    with pytest.raises(ConfigError, match='launch with torchrun'):
        check_fsdp(fsdp, ckpt)
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(ConfigError, match='self-supervised recipe only'):
        check_fsdp(PretrainConfig(preset='tiny', fsdp=True,
                                  domains=[dict(name='a', store='s')]), ckpt)
    check_fsdp(fsdp, ckpt)  # nothing there yet
    ckpt.mkdir()
    (ckpt / 'step_00000004.pt').write_bytes(b'x')
    with pytest.raises(ConfigError,
                       match=r'DDP \(step_\*\.pt\).*without --fsdp'):
        check_fsdp(fsdp, ckpt)
    (ckpt / 'step_00000004.pt').unlink()
    (ckpt / 'step_00000004').mkdir()
    check_fsdp(fsdp, ckpt)
    with pytest.raises(ConfigError, match=r'sharded \(--fsdp\).*with --fsdp'):
        check_fsdp(PretrainConfig(store='s', preset='tiny'), ckpt)


def _fsdp_worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=2)
    parts = list(_training())
    model = shard_model(parts[0], torch.device('cpu'))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    ema = ExponentialMovingAverage(model, 0.9)
    parts = (model, optimizer, scheduler, parts[3], ema)
    for step in range(2):
        _step(*parts, seed=10 * rank + step)
    checkpoints = ShardedCheckpoints(Path(out) / 'checkpoints', 1, *parts)
    path = checkpoints.save(2, epoch=0, position=2, skipped=0)
    # Every rank holds half of each parameter: gather the full tensors
    # (buffers are replicated).
    state = model.state_dict()
    full = {k: v.full_tensor() if isinstance(v, DTensor) else v
            for k, v in state.items()}
    averaged = {k: v.full_tensor() for k, v in ema.shadow.items()}
    if rank == 0:
        params = dict(model.named_parameters())
        assert all(isinstance(state[k], DTensor) for k in params)
        assert all(p.to_local().numel() < p.numel()
                   for p in params.values() if p.shape[0] > 1)
        consolidate(path, Path(out) / 'consolidated.pt')
        torch.save(dict(model=full, ema=averaged), Path(out) / 'full.pt')
    dist.barrier()
    dist.destroy_process_group()


def test_consolidated_equals_fsdp_model(tmp_path):
    torch.multiprocessing.spawn(
        _fsdp_worker, args=(str(tmp_path / 'init'), str(tmp_path)),
        nprocs=2)
    full = torch.load(tmp_path / 'full.pt')
    backbone = load_backbone(tmp_path / 'consolidated.pt', heads=True)
    state = backbone.state_dict()
    assert state.keys() == full['model'].keys()
    assert all(torch.equal(state[k], v) for k, v in full['model'].items())
    consolidated = torch.load(tmp_path / 'consolidated.pt',
                              weights_only=False)
    assert all(torch.equal(consolidated['ema'][k], v)
               for k, v in full['ema'].items())
    # Trained: not the initialisation any more.
    torch.manual_seed(0)
    init = UniMol2.from_preset('tiny').state_dict()
    assert not torch.equal(init['embed_tokens.weight'],
                           state['embed_tokens.weight'])


def _torchrun(store: Path, out: Path, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node=2', '-m', 'pyg_unimol2.pretrain',
           '--store', str(store), '--out', str(out), '--preset', 'tiny',
           '--max-steps', str(STEPS), '--warmup-steps', '3',
           '--lr', '5e-4', '--max-tokens', '160', '--valid-fraction', '0.1',
           '--valid-every', '4', '--ckpt-every', '2', '--threads', '1',
           '--ema-decay', '0.9', '--keep-checkpoints', '3', '--no-progress',
           *flags]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope='module')
def runs(store, tmp_path_factory) -> Dict[str, Path]:
    """Uninterrupted DDP and FSDP runs of the same settings."""
    root = tmp_path_factory.mktemp('fsdp_runs')
    ddp = _torchrun(store, root / 'ddp')
    finish_torchrun(ddp)
    finish_torchrun(_torchrun(store, root / 'fsdp', '--fsdp'))
    return dict(ddp=root / 'ddp', fsdp=root / 'fsdp')


def _rows(out: Path, keys) -> List[Dict[str, float]]:
    return [{k: r[k] for k in ('step', *keys) if k in r}
            for r in read_metrics(out) if any(k in r for k in keys)]


@pytest.mark.slow
def test_fsdp_matches_ddp(runs):
    ddp, fsdp = runs['ddp'], runs['fsdp']
    for keys in (TRAIN, VALID):
        a, b = _rows(ddp, keys), _rows(fsdp, keys)
        assert [r['step'] for r in a] == [r['step'] for r in b]
        for x, y in zip(a, b):
            for key in keys:
                assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6), \
                    (x['step'], key)
    assert len(_rows(fsdp, TRAIN)) == STEPS
    assert len(_rows(fsdp, VALID)) == 2
    # The consolidated model is the DDP run's final model to float noise:
    # Adam turns the noise of near-zero gradients (the attention-bias
    # biases, to which the softmax is invariant) into updates of ~1e-6,
    # small beside those of the steps (lr 5e-4).
    final = load_backbone(list_checkpoints(ddp / 'checkpoints')[-1],
                          heads=True).state_dict()
    consolidated = load_backbone(fsdp / 'consolidated.pt',
                                 heads=True).state_dict()
    assert consolidated.keys() == final.keys()
    for key, value in final.items():
        assert torch.allclose(consolidated[key], value, rtol=1e-4,
                              atol=1e-5), key
    names = [p.name for p in list_sharded_checkpoints(fsdp / 'checkpoints')]
    assert names == ['step_00000004', 'step_00000006', 'step_00000008']


@pytest.mark.slow
def test_fsdp_sigkill_resume_reproduces_trajectory(runs, store, tmp_path):
    out = tmp_path / 'killed'
    proc = _torchrun(store, out, '--fsdp')
    ckpt = out / 'checkpoints'
    kill_torchrun_at(proc, ckpt / 'step_00000004')
    killed_at = max(int(p.name[5:]) for p in list_sharded_checkpoints(ckpt))
    assert 4 <= killed_at < STEPS and not (out / 'consolidated.pt').exists()

    finish_torchrun(_torchrun(store, out, '--fsdp'))
    ref = runs['fsdp']
    for keys in (TRAIN, VALID):
        assert _rows(out, keys) == _rows(ref, keys)  # exactly
    a = torch.load(ref / 'consolidated.pt', weights_only=False)
    b = torch.load(out / 'consolidated.pt', weights_only=False)
    assert a['step'] == b['step'] == STEPS
    for group in ('model', 'ema'):
        assert all(torch.equal(a[group][k], b[group][k]) for k in a[group])
    assert not list(ckpt.glob('*.tmp'))
