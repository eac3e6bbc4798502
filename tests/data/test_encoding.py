import numpy as np
import pytest
from ogb.utils.features import allowable_features, bond_to_feature_vector
from rdkit import Chem

from pyg_unimol2.data.encoding import (BOND_STEREO_VOCAB, CHIRALITY_VOCAB,
                                       UNREACHABLE_SPD, atom_feat_codes,
                                       bond_features, bond_stereo_tag,
                                       chirality_tag, degree_codes,
                                       dropped_codes, official_atom_fields,
                                       ogb_atom_features, pair_feat_codes,
                                       pair_type_codes, spd_codes)

ATROPISOMER = 'Cc1cccc(C)c1-c1c(C)cccc1O |wU:7.6|'  # biaryl axis = bond 7


def test_vocabularies_match_the_official_code():
    # unimol_tools 0.1.6 `possible_chirality_list`, in this order.
    assert CHIRALITY_VOCAB == (
        'CHI_UNSPECIFIED', 'CHI_TETRAHEDRAL_CW', 'CHI_TETRAHEDRAL_CCW',
        'CHI_TRIGONALBIPYRAMIDAL', 'CHI_OCTAHEDRAL', 'CHI_SQUAREPLANAR',
        'CHI_OTHER')
    assert BOND_STEREO_VOCAB == ('STEREONONE', 'STEREOZ', 'STEREOE',
                                 'STEREOCIS', 'STEREOTRANS', 'STEREOANY')
    assert UNREACHABLE_SPD == 510


def test_known_chirality_tags_are_kept():
    alanine = Chem.MolFromSmiles('C[C@H](N)C(=O)O')
    assert chirality_tag(alanine.GetAtomWithIdx(1)) == 'CHI_TETRAHEDRAL_CCW'
    assert chirality_tag(alanine.GetAtomWithIdx(0)) == 'CHI_UNSPECIFIED'
    platinum = Chem.MolFromSmiles('F[Pt@SP1](Cl)(Br)I')
    assert chirality_tag(platinum.GetAtomWithIdx(1)) == 'CHI_SQUAREPLANAR'


def test_modern_chirality_tags_map_to_other():
    # An allene stereo centre survives parsing without sanitization.
    params = Chem.SmilesParserParams()
    params.sanitize = params.removeHs = False
    allene = Chem.MolFromSmiles('OC(Cl)=[C@AL1]=C(C)F', params)
    atom = allene.GetAtomWithIdx(3)
    assert atom.GetChiralTag() == Chem.ChiralType.CHI_ALLENE
    assert chirality_tag(atom) == 'CHI_OTHER'

    alanine = Chem.MolFromSmiles('C[C@H](N)C(=O)O')
    atom = alanine.GetAtomWithIdx(1)
    atom.SetChiralTag(Chem.ChiralType.CHI_TETRAHEDRAL)
    assert chirality_tag(atom) == 'CHI_OTHER'


def test_atropisomer_stereo_maps_to_any():
    mol = Chem.MolFromSmiles(ATROPISOMER)
    axis = mol.GetBondWithIdx(7)
    assert axis.GetStereo() == Chem.BondStereo.STEREOATROPCW
    with pytest.raises(ValueError):  # OGB (and the official code) raise.
        bond_to_feature_vector(axis)
    assert bond_stereo_tag(axis) == 'STEREOANY'
    assert bond_features(axis) == [0, 5, 1]  # SINGLE, STEREOANY, conjugated


@pytest.mark.parametrize('smiles', [
    'CC(=O)Oc1ccccc1C(=O)O', 'C/C=C/C(=O)O', 'C/C=C\\Cl', 'CC#N',
    'c1c[nH]cn1', 'O=[N+]([O-])c1ccccc1'
])
def test_bond_features_equal_ogb(smiles):
    mol = Chem.MolFromSmiles(smiles)
    for bond in mol.GetBonds():
        assert bond_features(bond) == bond_to_feature_vector(bond)


def test_atom_feat_codes_of_aspirin():
    mol = Chem.MolFromSmiles('CC(=O)Oc1ccccc1C(=O)O')
    x = ogb_atom_features(mol)
    codes = atom_feat_codes(official_atom_fields(mol, x))
    # Methyl C: unspecified, total degree 4, charge 0, 3 H, no radical, SP3,
    # not aromatic, not in ring; each index v of field k is v + 16 k + 3.
    assert codes[0].tolist() == [3, 23, 40, 54, 67, 85, 99, 115]
    # Aromatic C-H: total degree 3, 1 H, SP2, aromatic, in ring.
    assert codes[5].tolist() == [3, 22, 40, 52, 67, 84, 100, 116]
    # Every atom, from RDKit directly.
    hybrid = ['SP', 'SP2', 'SP3', 'SP3D', 'SP3D2']
    for atom, row in zip(mol.GetAtoms(), codes):
        expected = [
            0, atom.GetTotalDegree(), atom.GetFormalCharge() + 5,
            atom.GetTotalNumHs(), atom.GetNumRadicalElectrons(),
            hybrid.index(str(atom.GetHybridization())),
            int(atom.GetIsAromatic()), int(atom.IsInRing())
        ]
        assert row.tolist() == [v + 16 * k + 3 for k, v in enumerate(expected)]


def test_chirality_slot_uses_the_official_vocabulary():
    # OGB and the official code index CHI_SQUAREPLANAR differently.
    mol = Chem.MolFromSmiles('F[Pt@SP1](Cl)(Br)I')
    x = ogb_atom_features(mol)
    assert x[1, 1] == allowable_features['possible_chirality_list'].index(
        'misc')
    assert atom_feat_codes(official_atom_fields(mol, x))[1, 0] == 5 + 3


def test_pair_codes():
    # Ethanol: C0-C1-O2, both directions.
    edge_index = np.array([[0, 1, 1, 2], [1, 0, 2, 1]])
    edge_attr = np.array([[0, 0, 0], [0, 0, 0], [1, 2, 1], [1, 2, 1]])
    pair = pair_feat_codes(edge_index, edge_attr, 3)
    assert pair.dtype == np.uint8
    assert pair[0, 1].tolist() == [4, 20, 36]
    assert pair[2, 1].tolist() == [5, 22, 37]
    for i, j in [(0, 0), (1, 1), (0, 2), (2, 0)]:
        assert pair[i, j].tolist() == [2, 2, 2]
    assert degree_codes(edge_index, 3).tolist() == [3, 4, 3]
    assert degree_codes(np.zeros((2, 0), np.int64), 2).tolist() == [2, 2]


def test_spd_codes():
    distance = np.array([[0, 1, 1e8], [1, 0, 1e8], [1e8, 1e8, 0]])
    spd = spd_codes(distance)
    assert spd.dtype == np.int16
    assert spd.tolist() == [[1, 2, 510], [2, 1, 510], [510, 510, 1]]
    assert spd_codes(np.array([[508.0, 509.0, 700.0]])).tolist() == [
        [509, 510, 510]
    ]


def test_pair_type_uses_the_chirality_code():
    atom_feat = np.array([[3] + [99] * 7, [4] + [99] * 7])
    pair_type = pair_type_codes(atom_feat)
    assert pair_type.dtype == np.uint8
    assert pair_type.tolist() == [[[4, 132], [4, 133]], [[5, 132], [5, 133]]]


def test_dropped_codes():
    atom_feat, degree, pair_feat, spd, pair_type = dropped_codes(3)
    assert atom_feat.shape == (3, 8) and (atom_feat == 1).all()
    assert degree.tolist() == [1, 1, 1]
    assert pair_feat.shape == (3, 3, 3) and (pair_feat == 1).all()
    assert spd.shape == (3, 3) and (spd == 511).all()
    assert pair_type.shape == (3, 3, 2)
    assert (pair_type[..., 0] == 2).all() and (pair_type[..., 1] == 130).all()
