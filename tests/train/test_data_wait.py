"""Batches prepared in worker processes: packed batches rebuild exactly,
batch order and content do not depend on the number of workers (losses of
real fine-tuning and pretraining runs repeat bit for bit), and both loops
log the data-wait fraction."""
import json
import os
import time
import warnings

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import \
    EventAccumulator
from torch_geometric.data import Batch

from conftest import read_metrics, read_moses
from pyg_unimol2.cli import main
from pyg_unimol2.data import featurize_smiles, to_dense
from pyg_unimol2.data.store import CorruptStoreError
from pyg_unimol2.data.packed import Packed
from pyg_unimol2.data.prefetch import EpochLoader, default_workers
from pyg_unimol2.pretrain import ObjectiveConfig, PretrainConfig
from pyg_unimol2.pretrain.trainer import pretrain
from pyg_unimol2.train.batches import TaskBatches, collate
from pyg_unimol2.train.conformers import RandomConformer
from pyg_unimol2.train.data_wait import DataWait


@pytest.fixture(scope='module')
def molecules():
    data = featurize_smiles(read_moses(24), workers=1, progress=False,
                            optimize=False).data
    for i, d in enumerate(data):
        d.y = torch.tensor([[float(i)]])
    return data


def _assert_same_batch(a: Batch, b: Batch) -> None:
    assert a.keys() == b.keys()
    for key in a.keys():
        if torch.is_tensor(a[key]):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key],
                                                                b[key]), key
        else:
            assert a[key] == b[key], key


def test_packed_batch_rebuilds_exactly(molecules):
    batch = collate(molecules[:8])
    packed = Packed.pack(batch)
    assert repr(packed).startswith('Packed(') and packed.buffer.dtype == \
        torch.uint8
    back = packed.unpack()
    _assert_same_batch(back, batch)
    assert back.num_graphs == 8
    # The slice dicts travel too: the batch splits back into molecules.
    assert torch.equal(back.to_data_list()[5].pos, molecules[5].pos)
    dense = to_dense(batch)
    rebuilt, nothing = Packed.pack((dense, None)).unpack()
    assert nothing is None
    for name in ('token', 'pos', 'spd', 'pair_feat', 'atom_mask'):
        assert torch.equal(getattr(rebuilt, name), getattr(dense, name))
    empty = Packed.pack(torch.zeros(0, 3, dtype=torch.long)).unpack()
    assert empty.shape == (0, 3) and empty.dtype == torch.long


def test_epoch_loader_batches_do_not_depend_on_workers(molecules):
    plans = [[[0, 1, 2], [7, 3], [10, 11, 12, 13]], [[5], [6, 4, 20]]]
    state = torch.random.get_rng_state()
    got = {}
    for workers in (0, 2):
        loader = EpochLoader(molecules, collate, workers, torch.device('cpu'))
        got[workers] = [list(loader(plan)) for plan in plans]
    # Making and iterating loaders leaves the global RNG alone.
    assert torch.equal(torch.random.get_rng_state(), state)
    for epoch, plan in enumerate(plans):
        for i, indices in enumerate(plan):
            expected = collate([molecules[j] for j in indices])
            _assert_same_batch(got[0][epoch][i], expected)
            _assert_same_batch(got[2][epoch][i], expected)


class _Damaged(torch.utils.data.Dataset):
    """Molecules of which one fails verification, one is a missing file."""
    def __init__(self, molecules) -> None:
        self.molecules = molecules

    def __getitem__(self, index: int):
        if index == 3:
            raise CorruptStoreError('store/shard_000000.h5', range(3, 4),
                                    'checksum mismatch')
        if index == 4:
            raise FileNotFoundError(2, 'No such file', 'store/shard_1.h5')
        return self.molecules[index]


@pytest.mark.parametrize('workers', [0, 1])
def test_worker_errors_arrive_as_themselves(molecules, workers):
    loader = EpochLoader(_Damaged(molecules), collate, workers,
                         torch.device('cpu'))
    assert len(list(loader([[0, 1], [2]]))) == 2
    with pytest.raises(CorruptStoreError, match='shard_000000.h5: checksum '
                       'mismatch; store molecule 3 cannot be read'):
        list(loader([[0], [1, 3]]))
    with pytest.raises(FileNotFoundError) as error:
        list(loader([[4]]))
    assert error.value.filename == 'store/shard_1.h5'
    if workers:
        assert 'test_data_wait.py' in str(error.value.__cause__)  # its trace
    assert len(list(loader([[5, 6]]))) == 1  # the workers go on


class _Skipping(torch.utils.data.Dataset):
    """Molecules of which one is skipped with a warning, as a damaged
    molecule of an ``on_corrupt='skip'`` store is."""
    def __init__(self, molecules) -> None:
        self.molecules = molecules

    def __getitem__(self, index: int):
        if index == 2:
            warnings.warn('store/shard_000001.h5: checksum mismatch; store '
                          'molecule 2 skipped')
            return None
        return self.molecules[index]


def _collate_present(items):
    return collate([d for d in items if d is not None])


@pytest.mark.parametrize('workers', [0, 1])
def test_worker_warnings_reach_the_main_process(molecules, workers):
    loader = EpochLoader(_Skipping(molecules), _collate_present, workers,
                         torch.device('cpu'))
    with pytest.warns(UserWarning, match='shard_000001.h5: checksum'):
        assert len(list(loader([[0, 1], [2, 3]]))) == 2
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # nothing left over from the others
        list(loader([[0], [1]]))


def test_persistent_workers_see_each_epoch(molecules):
    """Epoch-dependent views (a random conformer per epoch) draw the same
    conformers in worker processes as in the main process."""
    shifted = []
    for d in molecules:
        other = d.clone()
        other.pos = d.pos + 100.0
        shifted.append(other)
    view = RandomConformer([[a, b] for a, b in zip(molecules, shifted)],
                           seed=1)
    sizes = {'a': [d.num_nodes for d in molecules]}
    runs = {}
    for workers in (0, 2):
        source = TaskBatches({'a': view}, sizes, batch_size=6, seed=2,
                             num_workers=workers)
        runs[workers] = [[b.pos for _, b in source.iterate(epoch)]
                         for epoch in (1, 2, 3)]
    for w0, w2 in zip(runs[0], runs[2]):
        assert all(torch.equal(a, b) for a, b in zip(w0, w2))
    # The conformers drawn differ between epochs.
    firsts = [torch.cat(epoch).mean().item() for epoch in runs[2]]
    assert len(set(firsts)) > 1


def test_data_wait_fraction():
    clock = DataWait()
    for _ in range(2):
        clock.begin_step()
        time.sleep(0.05)  # waiting for the batch
        clock.data_ready()
        time.sleep(0.05)  # the step
        clock.end_step()
    assert 0.25 < clock.interval() < 0.75
    assert clock.interval() == 0.0  # a new, empty interval
    clock.begin_step()
    clock.data_ready()  # no wait
    time.sleep(0.05)
    clock.end_step()
    assert clock.interval() < 0.05
    assert 0.15 < clock.fraction < 0.6 and clock.total_wall >= 0.25


def test_default_workers_leave_a_core_per_rank(monkeypatch):
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    one = default_workers()
    assert 0 <= one <= 2 and one < len(os.sched_getaffinity(0))
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '10000')
    assert default_workers() == 0


def _finetune(tmp_path, workers: int):
    out = tmp_path / f'ft{workers}'
    main(['finetune', '--dataset', 'qm9', '--targets', 'gap',
          '--subset', '200', '--preset', 'tiny', '--epochs', '1',
          '--max-steps', '5', '--batch-size', '16', '--lr', '5e-4',
          '--root', str(tmp_path / 'data'), '--out', str(out),
          '--workers', '1', '--threads', '1', '--num-workers', str(workers)])
    return out


def test_finetune_logs_data_wait_and_ignores_workers(tmp_path, capsys):
    serial, parallel = _finetune(tmp_path, 0), _finetune(tmp_path, 2)
    printed = capsys.readouterr().out
    assert printed.count('data wait: ') == 2
    train = {}
    for out in (serial, parallel):
        records = [r for r in read_metrics(out) if r['group'] == 'train']
        assert [r['step'] for r in records] == [1, 2, 3, 4, 5]
        assert all(0.0 <= r['data_wait'] <= 1.0 for r in records)
        train[out] = [(r['loss'], r['grad_norm']) for r in records]
        results = json.loads((out / 'results.json').read_text())
        assert 0.0 <= results['data_wait'] <= 1.0
    assert train[serial] == train[parallel]
    events = EventAccumulator(str(parallel))
    events.Reload()
    assert len(events.Scalars('train/data_wait')) == 5


def test_pretrain_logs_data_wait_and_ignores_workers(store, tmp_path):
    runs = {}
    for workers in (0, 2):
        config = PretrainConfig(
            store=str(store), out=str(tmp_path / f'pt{workers}'),
            preset='tiny', max_steps=5, warmup_steps=2, lr=5e-4,
            max_tokens=160, valid_fraction=0.1, valid_every=5,
            ckpt_every=5, log_every=2, accumulation=2, progress=False,
            num_workers=workers, threads=1,
            objective=ObjectiveConfig.official())  # 2D coordinates too
        result = pretrain(config)
        assert 0.0 <= result['data_wait'] <= 1.0
        runs[workers] = read_metrics(tmp_path / f'pt{workers}')
    for records in runs.values():
        waits = {r['step']: r['data_wait'] for r in records
                 if 'data_wait' in r}
        assert sorted(waits) == [2, 4, 5]  # every log_every steps, the last
        assert all(0.0 <= w <= 1.0 for w in waits.values())
    losses = {w: [(r['step'], r['loss'], r['grad_norm'])
                  for r in records if 'loss' in r]
              for w, records in runs.items()}
    assert len(losses[0]) == 5 and losses[0] == losses[2]
    events = EventAccumulator(str(tmp_path / 'pt2' / 'tb'))
    events.Reload()
    assert [e.step for e in events.Scalars('train/data_wait')] == [2, 4, 5]
