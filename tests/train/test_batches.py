"""Training batches of several datasets: one dataset per batch, atom
budgets respected, any epoch replayable from any position."""
import pytest
import torch

from conftest import read_moses
from pyg_unimol2.data import featurize_smiles
from pyg_unimol2.train.batches import TaskBatches


@pytest.fixture(scope='module')
def views():
    data = featurize_smiles(read_moses(60), workers=1, progress=False).data
    for i, d in enumerate(data):
        d.y = torch.tensor([[float(i)]])
    return {'a': data[:20], 'b': data[20:]}


def _source(views, **kwargs):
    return TaskBatches(views, {n: [d.num_nodes for d in v]
                               for n, v in views.items()}, **kwargs)


def test_atom_budget_and_one_dataset_per_batch(views):
    source = _source(views, batch_size=16, max_tokens=200, seed=3)
    for name, batch in source.iterate(epoch=1):
        counts = torch.bincount(batch.batch)
        assert batch.num_graphs * int(counts.max()) <= 200
        offset = 0 if name == 'a' else 20
        ids = [int(v) - offset for v in batch.y.view(-1)]
        assert all(0 <= i < len(views[name]) for i in ids)
    # With proportional mixing every molecule comes exactly once an epoch.
    source = _source(views, batch_size=16, max_tokens=200,
                     mix='proportional')
    ys = sorted(int(v) for _, b in source.iterate(0) for v in b.y.view(-1))
    assert ys == list(range(60))


def test_replay_from_a_position(views):
    source = _source(views, batch_size=8, seed=1)
    full = [(n, b.y.view(-1).tolist()) for n, b in source.iterate(2)]
    tail = [(n, b.y.view(-1).tolist()) for n, b in source.iterate(2, 3)]
    assert tail == full[3:]
    other = [(n, b.y.view(-1).tolist()) for n, b in source.iterate(3)]
    assert other != full
