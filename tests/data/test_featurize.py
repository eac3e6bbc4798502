import csv

import numpy as np
import pytest
import torch
from conftest import read_moses
from ogb.utils.features import atom_to_feature_vector, bond_to_feature_vector
from rdkit import Chem
from rdkit.Chem import AllChem

from pyg_unimol2.data import (EmbeddingError, EmptyMoleculeError,
                              FeaturizationError, InvalidSmilesError,
                              TooManyAtomsError, UnsupportedElementError,
                              featurize_smiles, from_atoms, from_mol,
                              from_smiles, write_failures)
from pyg_unimol2.data import featurize

ASPIRIN = 'CC(=O)Oc1ccccc1C(=O)O'
SALT = 'C[N+](C)(C)C.[Cl-]'
HAND_PICKED = [ASPIRIN, SALT, 'c1ccncc1', 'c1c[nH]cn1', 'C[C@H](N)C(=O)O',
               'C/C=C/C(=O)O']
TENSOR_KEYS = ('z', 'x', 'atom_feat', 'degree', 'edge_index', 'edge_attr',
               'pos', 'spd', 'pair_feat', 'pair_type', 'has_graph')


def embedded(smiles: str, seed: int = 0) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol


def assert_same(a, b):
    for key in TENSOR_KEYS:
        assert torch.equal(a[key], b[key]), key


def check_against_rdkit(data, smiles):
    """Every feature of ``data`` recomputed from RDKit and OGB directly."""
    mol = Chem.MolFromSmiles(smiles)  # heavy atoms, RDKit order
    n = mol.GetNumAtoms()
    assert data.num_nodes == n
    assert data.z.tolist() == [a.GetAtomicNum() for a in mol.GetAtoms()]
    assert data.x.tolist() == [atom_to_feature_vector(a)
                               for a in mol.GetAtoms()]
    assert data.degree.tolist() == [a.GetDegree() + 2 for a in mol.GetAtoms()]
    distance = Chem.GetDistanceMatrix(mol)
    expected_spd = np.where(distance > n, 510, distance + 1)
    assert np.array_equal(data.spd.view(n, n).numpy(), expected_spd)

    pair_feat = data.pair_feat.view(n, n, 3).long()
    bonded = torch.zeros(n, n, dtype=torch.bool)
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        code = [v + 4 + 16 * k
                for k, v in enumerate(bond_to_feature_vector(bond))]
        assert pair_feat[i, j].tolist() == code
        assert pair_feat[j, i].tolist() == code
        bonded[i, j] = bonded[j, i] = True
    assert (pair_feat[~bonded] == 2).all()
    edges = set(map(tuple, data.edge_index.t().tolist()))
    assert edges == set(zip(*bonded.nonzero().t().tolist()))
    assert data.edge_attr.size(0) == data.edge_index.size(1) == 2 * len(
        mol.GetBonds())

    a = data.atom_feat[:, 0]
    pair_type = data.pair_type.view(n, n, 2).long()
    assert torch.equal(pair_type[..., 0], (a + 1).view(n, 1).expand(n, n))
    assert torch.equal(pair_type[..., 1], (a + 129).view(1, n).expand(n, n))
    assert data.has_graph.tolist() == [True]


def test_dtypes_and_shapes():
    data = from_smiles(ASPIRIN)
    n = 13
    expected = dict(z=(torch.int64, [n]), x=(torch.int64, [n, 9]),
                    atom_feat=(torch.int64, [n, 8]),
                    degree=(torch.int64, [n]),
                    edge_index=(torch.int64, [2, 26]),
                    edge_attr=(torch.int64, [26, 3]),
                    pos=(torch.float32, [n, 3]),
                    spd=(torch.int16, [n * n]),
                    pair_feat=(torch.uint8, [n * n, 3]),
                    pair_type=(torch.uint8, [n * n, 2]),
                    has_graph=(torch.bool, [1]))
    for key, (dtype, shape) in expected.items():
        assert data[key].dtype == dtype, key
        assert list(data[key].shape) == shape, key
    assert data.smiles == ASPIRIN and data.name == ''


@pytest.mark.parametrize('smiles', read_moses(6) + HAND_PICKED)
def test_from_smiles_matches_rdkit(smiles):
    data = from_smiles(smiles)
    check_against_rdkit(data, smiles)
    # A real, MMFF-relaxed geometry: bonded heavy atoms 1.0-1.9 A apart.
    src, dst = data.edge_index
    length = (data.pos[src] - data.pos[dst]).norm(dim=-1)
    assert length.min() > 1.0 and length.max() < 1.9


def test_salt_and_charges():
    data = from_smiles(SALT)
    spd = data.spd.view(6, 6)
    assert (spd[:5, 5] == 510).all() and (spd[5, :5] == 510).all()
    assert spd[5, 5] == 1 and spd[0, 1] == 2 and spd[0, 2] == 3
    # OGB formal-charge index (-5..5), official code index + 35.
    assert data.x[1, 3] == 6 and data.x[5, 3] == 4
    assert data.atom_feat[1, 2] == 6 + 35 and data.atom_feat[5, 2] == 4 + 35
    assert data.degree.tolist() == [3, 6, 3, 3, 3, 2]


def test_stereo_centre_and_double_bond():
    alanine = from_smiles('C[C@H](N)C(=O)O')
    assert alanine.atom_feat[:, 0].tolist() == [3, 5, 3, 3, 3, 3]  # CCW = 2
    assert alanine.pair_type.view(6, 6, 2)[1, 0].tolist() == [6, 132]
    assert alanine.pair_type.view(6, 6, 2)[0, 1].tolist() == [4, 134]
    # E double bond C1=C2: [DOUBLE + 4, STEREOE + 20, conjugated + 36].
    crotonic = from_smiles('C/C=C/C(=O)O')
    assert crotonic.pair_feat.view(6, 6, 3)[1, 2].tolist() == [5, 22, 37]
    assert crotonic.pair_feat.view(6, 6, 3)[2, 1].tolist() == [5, 22, 37]


def test_modern_rdkit_tags_are_mapped():
    atropisomer = embedded('Cc1cccc(C)c1-c1c(C)cccc1O |wU:7.6|')
    axis = atropisomer.GetBondWithIdx(7)
    assert axis.GetStereo() == Chem.BondStereo.STEREOATROPCW
    i, j = axis.GetBeginAtomIdx(), axis.GetEndAtomIdx()
    data = from_mol(atropisomer)
    n = data.num_nodes
    assert data.pair_feat.view(n, n, 3)[i, j].tolist() == [4, 25, 37]
    bond = ((data.edge_index[0] == i) & (data.edge_index[1] == j))
    assert data.edge_attr[bond].tolist() == [[0, 5, 1]]

    mol = Chem.MolFromSmiles('C[C@H](N)C(=O)O')
    mol.GetAtomWithIdx(1).SetChiralTag(Chem.ChiralType.CHI_TETRAHEDRAL)
    mol = Chem.AddHs(mol)
    assert AllChem.EmbedMolecule(mol, randomSeed=0) == 0
    data = from_mol(mol)
    assert data.atom_feat[1, 0] == 6 + 3  # CHI_OTHER
    assert data.pair_type.view(6, 6, 2)[1, 1].tolist() == [10, 138]


def test_from_mol_heavy_atom_order_and_coordinates():
    mol = embedded(ASPIRIN)
    # Interleave the hydrogens with the heavy atoms.
    order = list(range(mol.GetNumAtoms()))
    order = order[13:17] + order[:5] + order[17:] + order[5:13]
    mol = Chem.RenumberAtoms(mol, order)
    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    data = from_mol(mol, name='aspirin-42')
    positions = mol.GetConformer().GetPositions()[heavy]
    assert torch.equal(data.pos, torch.from_numpy(positions).float())
    assert data.z.tolist() == [mol.GetAtomWithIdx(i).GetAtomicNum()
                               for i in heavy]
    assert data.name == 'aspirin-42'
    assert Chem.CanonSmiles(data.smiles) == Chem.CanonSmiles(ASPIRIN)


def test_from_mol_conformer_choice():
    mol = Chem.AddHs(Chem.MolFromSmiles('OCCCCO'))
    ids = list(AllChem.EmbedMultipleConfs(mol, 2, randomSeed=1))
    for conf_id in ids:
        data = from_mol(mol, conf_id=conf_id)
        expected = mol.GetConformer(conf_id).GetPositions()[:6]
        assert torch.equal(data.pos, torch.from_numpy(expected).float())
    assert not torch.equal(from_mol(mol, conf_id=ids[0]).pos,
                           from_mol(mol, conf_id=ids[1]).pos)


def test_all_hydrogens_are_removed():
    # Deuterium is hydrogen too: RemoveAllHs, not RemoveHs (which keeps it).
    data = from_smiles('[2H]C([2H])([2H])O')
    assert data.z.tolist() == [6, 8]
    assert data.degree.tolist() == [3, 3]


def test_keep_hydrogens():
    data = from_smiles('CO', remove_hs=False)
    mol = Chem.AddHs(Chem.MolFromSmiles('CO'))
    assert data.z.tolist() == [a.GetAtomicNum() for a in mol.GetAtoms()]
    assert data.degree.tolist() == [a.GetDegree() + 2 for a in mol.GetAtoms()]
    assert data.spd.view(6, 6)[2].tolist() == [2, 3, 1, 3, 3, 4]
    assert (data.x[:, 4] == 0).all()  # no implicit hydrogen is left


def test_seed_determinism():
    smiles = 'CCCCOc1ccc(CC(=O)NC)cc1'
    first, again = from_smiles(smiles, seed=7), from_smiles(smiles, seed=7)
    assert torch.equal(first.pos, again.pos)
    assert not torch.equal(first.pos, from_smiles(smiles, seed=8).pos)
    unoptimized = from_smiles(smiles, seed=7, optimize=False)
    assert not torch.equal(first.pos, unoptimized.pos)


@pytest.mark.parametrize('smiles,error', [
    ('C1CC', InvalidSmilesError),
    ('not a molecule', InvalidSmilesError),
    ('CC(C)(C)(C)(C)C', InvalidSmilesError),
    ('*CC', UnsupportedElementError),
    ('[H][H]', EmptyMoleculeError),
    ('', EmptyMoleculeError),
])
def test_from_smiles_errors_name_the_molecule(smiles, error):
    with pytest.raises(error) as info:
        from_smiles(smiles)
    assert repr(smiles) in str(info.value)
    assert info.value.name == smiles


def test_valence_error_explains():
    with pytest.raises(InvalidSmilesError, match='valence'):
        from_smiles('CC(C)(C)(C)(C)C')


def test_atom_limit_is_checked_before_embedding(monkeypatch):
    def fail(*args):
        raise AssertionError('embedding was attempted')

    monkeypatch.setattr(featurize, '_embed', fail)
    with pytest.raises(TooManyAtomsError, match=r"'C{12}' \(12 > max_"):
        from_smiles('C' * 12, max_atoms=11)
    with pytest.raises(TooManyAtomsError, match='8 > max_atoms=7'):
        from_smiles('CC', max_atoms=7, remove_hs=False)  # + 6 H


def test_embedding_failure_tries_every_fallback(monkeypatch):
    calls = []

    def embed(mol, params):
        calls.append((params.maxIterations, params.useBasicKnowledge,
                      params.useRandomCoords))
        return -1

    monkeypatch.setattr(AllChem, 'EmbedMolecule', embed)
    with pytest.raises(EmbeddingError, match="'CCO'"):
        from_smiles('CCO')
    assert calls == [(50, True, False), (0, False, False), (0, True, True)]


def test_from_mol_errors_name_the_molecule():
    mol = embedded('*CC')
    with pytest.raises(UnsupportedElementError, match='frag-7'):
        from_mol(mol, name='frag-7')
    with pytest.raises(UnsupportedElementError, match=r"'\*CC'"):
        from_mol(mol)
    with pytest.raises(TooManyAtomsError, match='big-1'):
        from_mol(embedded(ASPIRIN), name='big-1', max_atoms=12)
    with pytest.raises(FeaturizationError, match='no conformer'):
        from_mol(Chem.MolFromSmiles('CCO'), name='flat')


def test_from_atoms():
    z = [8, 1, 1, 6]
    pos = torch.tensor([[0., 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.3]])
    data = from_atoms(z, pos, name='w')
    assert data.z.tolist() == [8, 6]
    assert torch.equal(data.pos, pos[[0, 3]])
    assert data.x.tolist() == [[7] + [0] * 8, [5] + [0] * 8]
    assert (data.atom_feat == 1).all() and data.degree.tolist() == [1, 1]
    assert data.spd.tolist() == [511] * 4
    assert (data.pair_feat == 1).all() and data.pair_feat.shape == (4, 3)
    assert data.pair_type.tolist() == [[2, 130]] * 4
    assert data.edge_index.shape == (2, 0) and data.edge_attr.shape == (0, 3)
    assert data.has_graph.tolist() == [False]
    assert data.name == 'w' and data.smiles == ''
    assert from_atoms(z, pos, name='w', remove_hs=False).num_nodes == 4

    with pytest.raises(UnsupportedElementError, match="'ghost'"):
        from_atoms([6, 0], pos[:2], name='ghost')
    with pytest.raises(UnsupportedElementError, match="'heavy'"):
        from_atoms([119], pos[:1], name='heavy')
    with pytest.raises(EmptyMoleculeError, match="'h2'"):
        from_atoms([1, 1], pos[:2], name='h2')
    with pytest.raises(ValueError, match="'bad'"):
        from_atoms([6, 6], pos, name='bad')


def test_featurize_smiles_skips_exactly_the_broken_ones(tmp_path):
    good = read_moses(4) + [SALT]
    inputs = [good[0], 'C1CC', good[1], '*C', good[2], '', good[3], 'Xx',
              good[4]]
    result = featurize_smiles(inputs, workers=2, chunksize=2, progress=False)
    assert result.indices == [0, 2, 4, 6, 8]
    assert [d.smiles for d in result.data] == good
    assert [(f.index, f.smiles) for f in result.failures] == [
        (1, 'C1CC'), (3, '*C'), (5, ''), (7, 'Xx')
    ]
    assert 'unparsable SMILES' in result.failures[0].reason
    assert 'unsupported element' in result.failures[1].reason
    for data, smiles in zip(result.data, good):
        assert_same(data, from_smiles(smiles))  # position-independent seed

    serial = featurize_smiles(inputs, workers=1, progress=False)
    assert serial.indices == result.indices
    assert serial.failures == result.failures
    for a, b in zip(serial.data, result.data):
        assert_same(a, b)

    path = tmp_path / 'failures.csv'
    write_failures(result.failures, path)
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['index', 'smiles', 'reason']
    assert rows[1:] == [[str(f.index), f.smiles, f.reason]
                        for f in result.failures]


def test_featurize_smiles_catches_unexpected_errors(monkeypatch):
    embed = featurize._embed

    def flaky(mol, name, *args):
        if name == 'CCN':
            raise RuntimeError('RDKit exploded')
        return embed(mol, name, *args)

    monkeypatch.setattr(featurize, '_embed', flaky)
    result = featurize_smiles(['CCO', 'CCN', 'CCC'], workers=1,
                              progress=False)
    assert result.indices == [0, 2]
    assert result.failures[0].index == 1
    assert result.failures[0].reason == "RuntimeError: RDKit exploded ('CCN')"
