"""Sparse labels: the loss and its gradient with missing labels equal those
computed on the observed labels alone; a task without labels in a batch
contributes nothing."""
import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Crippen
from torch_geometric.data import Batch

from conftest import read_moses
from pyg_unimol2.data import featurize_smiles
from pyg_unimol2.models.multitask import build_multitask
from pyg_unimol2.tasks import Task
from pyg_unimol2.tasks.losses import multitask_loss, task_loss
from pyg_unimol2.tasks.metrics import task_metrics

TASKS = [Task('logP', weight=2.0), Task('aromatic', 'classification')]


@pytest.fixture(scope='module')
def molecules():
    """40 MOSES molecules with two real labels: Crippen logP and whether
    the molecule has an aromatic ring."""
    data = featurize_smiles(read_moses(40), workers=1, progress=False).data
    for d in data:
        mol = Chem.MolFromSmiles(d.smiles)
        aromatic = any(a.GetIsAromatic() for a in mol.GetAtoms())
        d.y = torch.tensor([[Crippen.MolLogP(mol), float(aromatic)]])
    return data


def _remove(molecules, fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for d in molecules:
        d = d.clone()
        drop = rng.uniform(size=2) < fraction
        d.y = d.y.masked_fill(torch.from_numpy(drop).view(1, 2), float('nan'))
        out.append(d)
    return out


def _model():
    torch.manual_seed(0)
    model = build_multitask('tiny', {'d': TASKS}).eval()  # no dropout
    model.head('d', 'logP').set_stats(torch.tensor([2.5]),
                                      torch.tensor([1.2]))
    return model


def test_loss_with_70_percent_missing_equals_loss_on_observed(molecules):
    sparse = _remove(molecules, 0.7, seed=0)
    y = torch.cat([d.y for d in sparse])
    observed = torch.isfinite(y)
    assert 0.2 < observed.float().mean() < 0.4 and observed.any(0).all()

    model = _model()
    loss, parts = multitask_loss(
        TASKS, model(Batch.from_data_list(sparse), 'd'),
        model.standardized_targets('d', Batch.from_data_list(sparse)))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()
             if p.grad is not None}

    # The same, task by task, on the molecules that have the label only.
    model = _model()
    expected = 0.0
    for c, task in enumerate(TASKS):
        keep = [d for d, ok in zip(sparse, observed[:, c]) if ok]
        batch = Batch.from_data_list(keep)
        out = model(batch, 'd')[task.name]
        target = model.standardized_targets('d', batch)[task.name]
        value, count = task_loss(task, out, target)
        assert count == len(keep) and parts[task.name][1] == count
        assert parts[task.name][0] == pytest.approx(float(value.detach()), rel=1e-6)
        expected = expected + task.weight * value
    expected = expected / sum(t.weight for t in TASKS)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()),
                                                 rel=1e-6)
    expected.backward()
    for name, p in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-5,
                                       atol=1e-7)


def test_task_without_labels_in_the_batch_contributes_nothing(molecules):
    batch_data = [d.clone() for d in molecules[:8]]
    for d in batch_data:
        d.y[0, 1] = float('nan')  # no 'aromatic' label in this batch
    model = _model()
    batch = Batch.from_data_list(batch_data)
    loss, parts = multitask_loss(TASKS, model(batch, 'd'),
                                 model.standardized_targets('d', batch))
    assert parts['aromatic'] == (0.0, 0)
    loss.backward()
    head = model.head('d', 'aromatic')
    assert all(p.grad is None or not p.grad.any() for p in head.parameters())
    only = task_loss(TASKS[0], model(batch, 'd')['logP'],
                     model.standardized_targets('d', batch)['logP'])[0]
    assert float(loss) == pytest.approx(float(only) * 2.0 / 3.0, rel=1e-6)


def test_metrics_ignore_missing_labels(molecules):
    sparse = _remove(molecules, 0.7, seed=1)
    model = _model()
    batch = Batch.from_data_list(sparse)
    pred = model.predict(batch, 'd')
    for c, task in enumerate(TASKS):
        y = batch.y[:, c]
        ok = torch.isfinite(y)
        full = task_metrics(task, pred[task.name].numpy(), y.numpy())
        sub = task_metrics(task, pred[task.name][ok].numpy(), y[ok].numpy())
        assert full['count'] == int(ok.sum())
        for key in full:
            assert full[key] == pytest.approx(sub[key], nan_ok=True), key
