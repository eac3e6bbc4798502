"""Checkpoints carry a checksum that is verified before use: damaged bytes
that ``torch.load`` would read silently are named, and resuming passes over
a damaged newest checkpoint."""
from pathlib import Path

import pytest
import torch

from pyg_unimol2.checkpoints import (CheckpointError, CheckpointWriter,
                                     atomic_save, pretrain_state,
                                     read_checkpoint, resume_checkpoint)
from pyg_unimol2.checkpoints.integrity import CHECKSUM_KEY, seal, verify
from pyg_unimol2.models import UniMol2


def _training_state() -> dict:
    """A real pretraining checkpoint after one AdamW step with a LambdaLR
    schedule (ints, floats, tuples, nested dicts and tensors)."""
    torch.manual_seed(0)
    model = UniMol2.from_preset('tiny')
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda s: 1 / (s + 1))
    loss = sum(p.square().sum() for p in model.parameters())
    loss.backward()
    optimizer.step()
    scheduler.step()
    return pretrain_state(model, optimizer=optimizer.state_dict(),
                          scheduler=scheduler.state_dict(), step=1,
                          epoch=0, position=3, world_size=1)


def _flip_middle(path: Path, length: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + length):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_sealed_checkpoint_round_trips(tmp_path):
    state = _training_state()
    atomic_save(state, tmp_path / 'a.pt')
    loaded = read_checkpoint(tmp_path / 'a.pt')
    assert verify(loaded) is True
    assert CHECKSUM_KEY not in state  # the caller's dict is not modified
    assert loaded['model'].keys() == state['model'].keys()
    assert all(torch.equal(loaded['model'][k], v)
               for k, v in state['model'].items())
    assert loaded['scheduler'] == state['scheduler']


def test_damaged_tensor_bytes_are_detected(tmp_path):
    path = tmp_path / 'a.pt'
    atomic_save(_training_state(), path)
    _flip_middle(path)
    # What the checksum is for: torch.load alone does not notice.
    torch.load(path, map_location='cpu', weights_only=False)
    with pytest.raises(CheckpointError, match=r'a\.pt is damaged'):
        read_checkpoint(path)


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'missing'])
def test_unreadable_checkpoints_name_the_file(tmp_path, damage):
    path = tmp_path / 'a.pt'
    atomic_save(_training_state(), path)
    if damage == 'truncated':
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == 'garbage':
        path.write_bytes(b'not a checkpoint' * 10)
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=str(path)):
        read_checkpoint(path)


def test_changed_value_fails_verification():
    state = seal({'step': 3, 'w': torch.ones(4)})
    assert verify(state) is True
    state['w'][1] = 2.0
    assert verify(state) is False
    assert verify({'step': 3}) is None  # unsealed (official, older)


def test_resume_passes_over_a_damaged_newest_checkpoint(tmp_path):
    state = _training_state()
    writer = CheckpointWriter(tmp_path / 'ckpt', keep=3)
    for step in (1, 2):
        writer.save(step, dict(state, step=step))
    writer.close()
    _flip_middle(tmp_path / 'ckpt' / 'step_00000002.pt')
    with pytest.warns(UserWarning, match='step_00000002.pt is damaged'):
        path, loaded = resume_checkpoint(tmp_path / 'ckpt')
    assert path.name == 'step_00000001.pt' and loaded['step'] == 1
    assert resume_checkpoint(tmp_path / 'empty') is None
