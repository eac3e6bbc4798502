import itertools

import pytest
import torch
from conftest import read_moses
from torch_geometric.data import Batch, Data

from pyg_unimol2.bench.baselines import DenseDimeNetPlusPlus, build_baseline
from pyg_unimol2.bench.geometry import radius_graph, triplets
from pyg_unimol2.data import from_smiles


@pytest.fixture(scope='module')
def batch():
    mols = [from_smiles(s, seed=0) for s in read_moses(6)]
    return Batch.from_data_list([Data(z=m.z, pos=m.pos) for m in mols])


def _brute_radius(pos, cutoff, batch):
    edges = set()
    for i, j in itertools.permutations(range(len(pos)), 2):
        if batch[i] == batch[j] and (pos[i] - pos[j]).norm() < cutoff:
            edges.add((j, i))
    return edges


@pytest.mark.parametrize('cutoff', [1.6, 3.0, 5.0])
def test_radius_graph_matches_brute_force(batch, cutoff):
    edge_index = radius_graph(batch.pos, cutoff, batch.batch)
    got = set(map(tuple, edge_index.t().tolist()))
    assert len(got) == edge_index.size(1)
    assert got == _brute_radius(batch.pos, cutoff, batch.batch)


def test_triplets_match_brute_force(batch):
    edge_index = radius_graph(batch.pos, 3.0, batch.batch)
    i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji = triplets(
        edge_index, batch.num_nodes)
    row, col = edge_index.tolist()
    assert i.tolist() == col and j.tolist() == row
    expected = {(e1, e2) for e2 in range(len(row)) for e1 in range(len(row))
                if col[e1] == row[e2] and row[e1] != col[e2]}
    got = list(zip(idx_kj.tolist(), idx_ji.tolist()))
    assert len(got) == len(set(got)) and set(got) == expected
    for kj, ji, a, b, c in zip(idx_kj.tolist(), idx_ji.tolist(),
                               idx_i.tolist(), idx_j.tolist(), idx_k.tolist()):
        assert (row[kj], col[kj], row[ji], col[ji]) == (c, b, b, a)


def test_dimenet_is_rotation_invariant_and_batch_consistent(batch):
    torch.manual_seed(0)
    model = DenseDimeNetPlusPlus(hidden_channels=16, out_channels=2,
                                 num_blocks=2, int_emb_size=8,
                                 basis_emb_size=4, out_emb_channels=16,
                                 num_spherical=3, num_radial=4).eval()
    out = model(batch.z, batch.pos, batch.batch)
    assert out.shape == (6, 2)
    rot, _ = torch.linalg.qr(torch.randn(3, 3))
    torch.testing.assert_close(model(batch.z, batch.pos @ rot, batch.batch),
                               out, atol=1e-4, rtol=1e-4)
    first = batch.batch == 0
    single = model(batch.z[first], batch.pos[first],
                   torch.zeros(int(first.sum()), dtype=torch.long))
    torch.testing.assert_close(single, out[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name', ['schnet', 'dimenet++'])
def test_geometric_baselines_output_one_value_per_target(batch, name):
    model = build_baseline(name, 3).eval()
    assert model(batch).shape == (6, 3)
