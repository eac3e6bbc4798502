import numpy as np
import pytest
import torch
from conftest import read_moses
from rdkit import Chem
from torch_geometric.loader import DataLoader

from pyg_unimol2.data import from_atoms, from_smiles, to_dense

SMILES = read_moses(3) + ['C[N+](C)(C)C.[Cl-]', 'c1ccncc1']


@pytest.fixture(scope='module')
def molecules():
    data = [from_smiles(smiles) for smiles in SMILES]
    water = from_atoms([8, 1, 1], [[0., 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]],
                       name='water')
    return data + [water]


def batches(molecules, batch_size):
    loader = DataLoader(molecules, batch_size=batch_size, shuffle=False)
    for i, batch in enumerate(loader):
        yield molecules[i * batch_size:(i + 1) * batch_size], batch


def test_shapes_and_padding(molecules):
    for mols, batch in batches(molecules, batch_size=4):
        sizes = [m.num_nodes for m in mols]
        B, L = len(mols), max(sizes)
        dense = to_dense(batch)
        assert dense.token.shape == (B, L)
        assert dense.atom_feat.shape == (B, L, 8)
        assert dense.degree.shape == (B, L)
        assert dense.pos.shape == (B, L, 3)
        assert dense.spd.shape == (B, L, L)
        assert dense.pair_feat.shape == (B, L, L, 3)
        assert dense.pair_type.shape == (B, L, L, 2)
        assert dense.num_atoms.tolist() == sizes
        for b, n in enumerate(sizes):
            mask = [True] * n + [False] * (L - n)
            assert dense.atom_mask[b].tolist() == mask
            for value in (dense.token, dense.atom_feat, dense.degree,
                          dense.pos):
                assert (value[b, n:] == 0).all()
            for value in (dense.spd, dense.pair_feat, dense.pair_type):
                assert (value[b, n:] == 0).all()
                assert (value[b, :, n:] == 0).all()
            assert dense.pair_mask[b].sum() == n * n


def test_values_and_atom_order(molecules):
    for mols, batch in batches(molecules, batch_size=3):
        dense = to_dense(batch)
        for b, data in enumerate(mols):
            n = data.num_nodes
            assert torch.equal(dense.token[b, :n], data.z)
            assert torch.equal(dense.pos[b, :n], data.pos)
            assert torch.equal(dense.atom_feat[b, :n], data.atom_feat)
            assert torch.equal(dense.degree[b, :n], data.degree)
            assert torch.equal(dense.pair_feat[b, :n, :n],
                               data.pair_feat.view(n, n, 3).long())
            a = dense.atom_feat[b, :n, 0]
            assert torch.equal(dense.pair_type[b, :n, :n, 0],
                               (a + 1).view(n, 1).expand(n, n))
            assert torch.equal(dense.pair_type[b, :n, :n, 1],
                               (a + 129).view(1, n).expand(n, n))


def test_spd_and_tokens_match_rdkit(molecules):
    batch = next(iter(DataLoader(molecules[:len(SMILES)],
                                 batch_size=len(SMILES))))
    dense = to_dense(batch)
    for b, smiles in enumerate(SMILES):
        mol = Chem.MolFromSmiles(smiles)
        n = mol.GetNumAtoms()
        distance = Chem.GetDistanceMatrix(mol)
        expected = np.where(distance > n, 510, distance + 1)
        assert np.array_equal(dense.spd[b, :n, :n].numpy(), expected)
        assert dense.token[b, :n].tolist() == [a.GetAtomicNum()
                                               for a in mol.GetAtoms()]
    salt = SMILES.index('C[N+](C)(C)C.[Cl-]')
    assert (dense.spd[salt, :5, 5] == 510).all()


def test_graph_free_molecule_in_a_batch(molecules):
    batch = next(iter(DataLoader(molecules[-2:], batch_size=2)))
    assert batch.has_graph.tolist() == [True, False]
    dense = to_dense(batch, max_num_atoms=8)
    assert dense.token.shape == (2, 8)
    assert dense.token[1].tolist() == [8] + [0] * 7
    assert dense.spd[1, 0, 0] == 511 and dense.pair_type[1, 0, 0].tolist() == [
        2, 130
    ]
    assert (dense.atom_feat[1, 0] == 1).all() and dense.degree[1, 0] == 1
    # The bonds of the first molecule are not shifted onto the second.
    assert batch.edge_index.max() < molecules[-2].num_nodes
