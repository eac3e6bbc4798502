"""The shared optimizer step: gradient accumulation equals one large batch;
mixed precision trains; a non-finite loss skips the update."""
import copy

import pytest
import torch
from torch_geometric.data import Batch

from conftest import read_moses
from pyg_unimol2.data import featurize_smiles
from pyg_unimol2.models.multitask import build_multitask
from pyg_unimol2.tasks import Task
from pyg_unimol2.tasks.losses import multitask_loss
from pyg_unimol2.train.loop import autocast, optimizer_step

TASKS = [Task('n')]


@pytest.fixture(scope='module')
def molecules():
    data = featurize_smiles(read_moses(16), workers=1, progress=False).data
    for d in data:
        d.y = torch.tensor([[float(d.num_nodes)]])
    return data


def _loss(precision='fp32'):
    def loss_fn(model, batch):
        with autocast(torch.device('cpu'), precision):
            out = model(batch, 'd')
        loss, _ = multitask_loss(TASKS, out,
                                 model.standardized_targets('d', batch))
        return loss, {}
    return loss_fn


def _setup():
    torch.manual_seed(0)
    model = build_multitask('tiny', {'d': TASKS}, dropout=0.0,
                            attention_dropout=0.0, pair_dropout=0.0)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_accumulation_equals_one_large_batch(molecules):
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    one, opt_one = _setup()
    two = copy.deepcopy(one)
    opt_two = torch.optim.SGD(two.parameters(), lr=0.1)
    whole = Batch.from_data_list(molecules)
    halves = [Batch.from_data_list(molecules[:8]),
              Batch.from_data_list(molecules[8:])]
    a = optimizer_step(one, opt_one, scaler, [whole], _loss(), 1e9)
    b = optimizer_step(two, opt_two, scaler, halves, _loss(), 1e9)
    assert a['micro_batches'] == 1 and b['micro_batches'] == 2
    assert b['loss'] / 2 == pytest.approx(a['loss'], rel=1e-5)
    assert b['grad_norm'] == pytest.approx(a['grad_norm'], rel=1e-4)
    for p, q in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_mixed_precision_steps_update_the_weights(molecules, precision):
    model, optimizer = _setup()
    scaler = torch.amp.GradScaler('cpu', enabled=precision == 'fp16')
    before = [p.detach().clone() for p in model.parameters()]
    batch = [Batch.from_data_list(molecules)]
    # fp16 loss scaling starts at 2**16 and backs off on overflow: the
    # first steps may be skipped, never all of them.
    for _ in range(20):
        out = optimizer_step(model, optimizer, scaler, batch,
                             _loss(precision), 1.0)
        if not out['skipped']:
            break
    assert torch.isfinite(torch.tensor(out['loss'])) and not out['skipped']
    assert any(not torch.equal(p, q)
               for p, q in zip(model.parameters(), before))


def test_non_finite_loss_skips_the_update(molecules):
    model, optimizer = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler('cpu', enabled=False)

    def bad(model, batch):
        loss, logs = _loss()(model, batch)
        return loss * float('nan'), logs
    out = optimizer_step(model, optimizer, scaler,
                         [Batch.from_data_list(molecules)], bad, 1.0)
    assert out['skipped'] == 1.0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
