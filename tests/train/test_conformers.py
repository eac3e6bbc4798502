import torch
from torch_geometric.loader import DataLoader

from pyg_unimol2.data import from_smiles
from pyg_unimol2.data.encoding import DROPPED_SPD
from pyg_unimol2.models.regressor import build_regressor
from pyg_unimol2.train.conformers import (RandomConformer, all_conformers,
                                          average_by_molecule,
                                          build_conformers,
                                          drop_graph_features)
from pyg_unimol2.train.finetune import evaluate


def test_average_by_molecule_averages_then_scores():
    pred = torch.tensor([[1.0], [3.0], [10.0], [0.0], [4.0]])
    y = torch.tensor([[2.0], [2.0], [5.0], [5.0], [5.0]])
    mol = torch.tensor([7, 7, 9, 9, 9])
    # molecule 7: mean 2 -> error 0; molecule 9: mean 14/3 -> error 1/3
    torch.testing.assert_close(average_by_molecule(pred, y, mol),
                               torch.tensor([1 / 6]))


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
    # Flexible molecules: the seeded conformers are different geometries.
    assert any(not torch.allclose(torch.cdist(c[0].pos, c[0].pos),
                                  torch.cdist(c[2].pos, c[2].pos), atol=1e-2)
               for c in confs)
    torch.manual_seed(0)
    drawn = [RandomConformer(confs)[1] for _ in range(20)]
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
    model = build_regressor('tiny', ['y']).eval()
    loader = DataLoader(all_conformers(confs), batch_size=4)
    batch = next(iter(DataLoader(all_conformers(confs), batch_size=6)))
    pred = model.predict(batch).view(3, 2).mean(1)
    expected = (pred - torch.tensor([0.0, 1.0, 2.0])).abs().mean()
    torch.testing.assert_close(evaluate(model, loader, torch.device('cpu')),
                               expected.view(1))


def test_conformers_are_embedded_once_per_process(monkeypatch):
    from pyg_unimol2.train import conformers
    first = build_conformers(_molecules(), 2, workers=1)

    def fail(*args, **kwargs):
        raise AssertionError('embedded again')
    monkeypatch.setattr(conformers, 'featurize_smiles', fail)
    again = build_conformers(_molecules(), 2, drop_feat=True, workers=1)
    assert torch.equal(first[0][1].pos, again[0][1].pos)
