import pytest
import torch
from torch_geometric.loader import DataLoader

from pyg_unimol2.data import from_smiles
from pyg_unimol2.data.encoding import DROPPED_SPD
from pyg_unimol2.models.multitask import build_multitask
from pyg_unimol2.tasks import Task
from pyg_unimol2.train.conformers import (RandomConformer, all_conformers,
                                          average_by_molecule,
                                          build_conformers,
                                          drop_graph_features)
from pyg_unimol2.train.evaluate import evaluate_view


def test_average_by_molecule_averages_rows_of_a_molecule():
    pred = torch.tensor([[1.0], [3.0], [10.0], [0.0], [4.0]])
    mol = torch.tensor([7, 7, 9, 9, 9])
    torch.testing.assert_close(average_by_molecule(pred, mol),
                               torch.tensor([[2.0], [14 / 3]]))


def _molecules():
    out = []
    for i, smi in enumerate(['CCCCOCCC(=O)N', 'OCCCc1ccncc1', 'CC(C)CCCNCC']):
        d = from_smiles(smi, seed=0)
        d.y = torch.tensor([[float(i)]])
        out.append(d)
    return out


def test_conformers_differ_and_keep_targets():
    confs = build_conformers(_molecules(), 3, workers=1)
    assert [len(c) for c in confs] == [3, 3, 3]
    for i, options in enumerate(confs):
        assert all(int(c.mol) == i and c.y.item() == i for c in options)
    # Flexible molecules: every generated conformer is a new geometry (RDKit
    # embeds seeds 0 and 1 alike, so conformer 1 must not use seed 1).
    for c in confs:
        for k in (1, 2):
            assert not torch.allclose(torch.cdist(c[0].pos, c[0].pos),
                                      torch.cdist(c[k].pos, c[k].pos),
                                      atol=1e-2)
    torch.manual_seed(0)
    view = RandomConformer(confs, seed=0)
    drawn = []
    for epoch in range(20):
        view.set_epoch(epoch)
        drawn.append(view[1])
        assert view[1] is drawn[-1]  # a function of (seed, epoch, index)
    assert len({id(d) for d in drawn}) > 1
    assert len(all_conformers(confs)) == 9


def test_dropped_features_keep_only_elements_and_geometry():
    data = _molecules()[1]
    dropped = drop_graph_features(data)
    assert torch.equal(dropped.z, data.z) and torch.equal(dropped.pos, data.pos)
    assert torch.all(dropped.spd == DROPPED_SPD)
    assert not bool(dropped.has_graph)
    assert dropped.pair_feat.shape == data.pair_feat.shape


def test_evaluate_averages_predictions_over_conformers():
    torch.manual_seed(0)
    confs = build_conformers(_molecules(), 2, workers=1)
    model = build_multitask('tiny', {'d': [Task('y')]}).eval()
    batch = next(iter(DataLoader(all_conformers(confs), batch_size=6)))
    pred = model.predict(batch, 'd')['y'].view(3, 2).mean(1)
    expected = (pred - torch.tensor([0.0, 1.0, 2.0])).abs().mean()
    metrics, _, _ = evaluate_view(model, all_conformers(confs), 'd',
                                  batch_size=4)
    assert metrics['y']['mae'] == pytest.approx(float(expected), rel=1e-5)
    assert metrics['y']['count'] == 3


def test_conformers_are_embedded_once_per_process(monkeypatch):
    from pyg_unimol2.train import conformers
    first = build_conformers(_molecules(), 2, workers=1)

    def fail(*args, **kwargs):
        raise AssertionError('embedded again')
    monkeypatch.setattr(conformers, 'featurize_smiles', fail)
    again = build_conformers(_molecules(), 2, drop_feat=True, workers=1)
    assert torch.equal(first[0][1].pos, again[0][1].pos)
