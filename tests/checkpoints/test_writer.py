import torch

from pyg_unimol2.checkpoints import (CheckpointWriter,
                                     latest_checkpoint,
                                     list_checkpoints)


def test_keeps_newest_ten(tmp_path):
    writer = CheckpointWriter(tmp_path, keep=10)
    for step in range(1, 14):
        writer.save(step * 100, {'step': step * 100,
                                 'w': torch.full((3, ), float(step))})
    writer.close()
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == [f'step_{s * 100:08d}.pt' for s in range(4, 14)]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    state = torch.load(latest_checkpoint(tmp_path))
    assert state['step'] == 1300 and torch.equal(state['w'],
                                         torch.full((3, ), 13.0))


def test_snapshot_taken_at_save(tmp_path):
    writer = CheckpointWriter(tmp_path)
    w = torch.zeros(1000)
    state = {'opt': {'state': {0: {'exp_avg': w}}}, 'list': [w]}
    writer.save(1, state)
    w += 1  # training goes on while the thread writes
    writer.close()
    saved = torch.load(tmp_path / 'step_00000001.pt')
    assert float(saved['opt']['state'][0]['exp_avg'].sum()) == 0
    assert float(saved['list'][0].sum()) == 0


def test_partial_files_are_ignored_and_removed(tmp_path):
    torch.save({'step': 5}, tmp_path / 'step_00000005.pt')
    # A write killed before its rename leaves only a .tmp file.
    (tmp_path / 'step_00000007.pt.tmp').write_bytes(b'\x80truncated')
    assert latest_checkpoint(tmp_path).name == 'step_00000005.pt'
    writer = CheckpointWriter(tmp_path)
    assert not (tmp_path / 'step_00000007.pt.tmp').exists()
    writer.save(9, {'step': 9})
    writer.wait()
    assert latest_checkpoint(tmp_path).name == 'step_00000009.pt'
    writer.close()
    assert latest_checkpoint(tmp_path / 'missing') is None


def test_write_errors_are_raised(tmp_path):
    writer = CheckpointWriter(tmp_path)
    writer.save(1, {'f': lambda: 0})  # not picklable
    try:
        writer.wait()
    except RuntimeError as e:
        assert 'checkpoint' in str(e)
    else:
        raise AssertionError('no error')
    assert list_checkpoints(tmp_path) == []
