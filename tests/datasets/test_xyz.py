"""mol_from_xyz / from_xyz on real QM9 geometries (from the qm9pack CSV)."""
import importlib.util
import os.path as osp

import numpy as np
import pytest
from rdkit import Chem

from pyg_unimol2.data.errors import (FeaturizationError, GraphMatchError,
                                     InvalidSmilesError)
from pyg_unimol2.data.xyz import from_xyz, mol_from_xyz

pd = pytest.importorskip('pandas')
if importlib.util.find_spec('qm9pack') is None:
    pytest.skip('qm9pack not installed', allow_module_level=True)

SYMBOL = {'H': 1, 'C': 6, 'N': 7, 'O': 8, 'F': 9}
# GDB indices used below: 1 methane, 19 acetamide, 105 bicyclo[1.1.1]pentane,
# 17954 cyclooctatetraene, 133857 (relaxed geometry bonded differently).
SPECIAL = [1, 19, 105, 17954, 133857]


def _parse(row):
    z = np.array([SYMBOL[e.strip(" '")] for e in row.Elements.strip('[]')
                  .split(',')])
    pos = np.array(row.XYZ_Ang.replace('[', '').replace(']', '').split(','),
                   float).reshape(-1, 3)
    return z, pos


@pytest.fixture(scope='module')
def qm9():
    """First 300 molecules of qm9pack part 1 plus a few special ones, as
    ``{gdb_idx: (z, pos, smiles)}`` (parsed here, independently of
    pyg_unimol2.datasets)."""
    spec = importlib.util.find_spec('qm9pack')
    folder = osp.join(list(spec.submodule_search_locations)[0], 'data')
    cols = ['Index', 'SMILES', 'Elements', 'XYZ_Ang']
    df = pd.concat([
        pd.read_csv(osp.join(folder, 'qm9_part1.csv'), usecols=cols,
                    nrows=18000),
        pd.read_csv(osp.join(folder, 'qm9_part3.csv'), usecols=cols,
                    skiprows=range(1, 43000), nrows=1000)])
    df = df[(df.Index <= 300) | df.Index.isin(SPECIAL)]
    return {int(r.Index): (*_parse(r), r.SMILES)
            for r in df.itertuples(index=False)}


def _canonical(smiles_or_mol):
    mol = (Chem.MolFromSmiles(smiles_or_mol)
           if isinstance(smiles_or_mol, str) else Chem.RemoveHs(smiles_or_mol))
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def test_order_conformer_and_graph(qm9):
    assert set(SPECIAL) <= set(qm9) and len(qm9) > 280
    for idx, (z, pos, smi) in qm9.items():
        if idx == 133857:
            continue
        mol = mol_from_xyz(z, pos, smiles=smi, name=str(idx))
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == z.tolist()
        assert np.allclose(mol.GetConformer().GetPositions(), pos, atol=1e-9)
        assert _canonical(mol) == _canonical(smi), idx
        assert Chem.GetFormalCharge(mol) == Chem.GetFormalCharge(
            Chem.MolFromSmiles(smi))


def test_permuted_and_heavy_only_input(qm9):
    rng = np.random.default_rng(0)
    for idx in [19, 105, 150, 250, 300]:
        z, pos, smi = qm9[idx]
        perm = rng.permutation(len(z))
        mol = mol_from_xyz(z[perm], pos[perm], smiles=smi)
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == z[perm].tolist()
        assert np.allclose(mol.GetConformer().GetPositions(), pos[perm])
        assert _canonical(mol) == _canonical(smi)
        # Heavy atoms only: hydrogen counts come from the template.
        heavy = z != 1
        mol_h = mol_from_xyz(z[heavy], pos[heavy], smiles=smi)
        assert mol_h.GetNumAtoms() == int(heavy.sum())
        assert _canonical(mol_h) == _canonical(smi)
        full = Chem.RemoveHs(mol_from_xyz(z, pos, smiles=smi))
        assert [a.GetTotalNumHs() for a in mol_h.GetAtoms()] == \
            [a.GetTotalNumHs() for a in full.GetAtoms()]


def test_strained_cage_long_contact(qm9):
    # Bicyclo[1.1.1]pentane: the 1,3 bridgeheads are 1.87 A apart, which
    # connect-the-dots perception bonds; the template must still match.
    z, pos, smi = qm9[105]
    assert smi == 'C1C2CC1C2'
    mol = mol_from_xyz(z, pos, smiles=smi)
    assert mol.GetNumBonds() == 6 + 8
    assert _canonical(mol) == _canonical(smi)


def test_bond_orders_follow_geometry(qm9):
    # Cyclooctatetraene: two Kekule structures map onto the same graph; the
    # double bonds must be put on the short bonds of the geometry.
    z, pos, smi = qm9[17954]
    assert smi == 'C1=CC=CC=CC=C1'
    mol = mol_from_xyz(z, pos, smiles=smi)
    length = {1.0: [], 2.0: []}
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        if z[i] == 6 == z[j]:
            d = np.linalg.norm(pos[i] - pos[j])
            length[b.GetBondTypeAsDouble()].append(d)
    assert len(length[2.0]) == 4 and len(length[1.0]) == 4
    assert max(length[2.0]) < 1.40 < min(length[1.0])


def test_mismatches_raise_named_errors(qm9):
    z, pos, smi = qm9[19]  # acetamide CC(N)=O
    assert smi == 'CC(N)=O'
    with pytest.raises(GraphMatchError, match='formula differs'):
        mol_from_xyz(z, pos, smiles='CC(C)=O', name='gdb_19')
    with pytest.raises(GraphMatchError, match='hydrogen placement') as e:
        mol_from_xyz(z, pos, smiles='CC(O)=N', name='gdb_19')  # tautomer
    assert "'gdb_19'" in str(e.value) and e.value.name == 'gdb_19'
    with pytest.raises(GraphMatchError, match='heavy-atom graph differs'):
        mol_from_xyz(z, pos, smiles='CNC=O', name='gdb_19')
    with pytest.raises(GraphMatchError, match='net charge'):
        mol_from_xyz(z, pos, smiles=smi, charge=1)
    with pytest.raises(InvalidSmilesError):
        mol_from_xyz(z, pos, smiles='C1CC', name='gdb_19')
    # A real QM9 molecule whose relaxed geometry is bonded differently from
    # its GDB SMILES.
    z, pos, smi = qm9[133857]
    assert smi == 'CC1C2C3C4=CCC13C24'
    with pytest.raises(GraphMatchError, match='133857'):
        mol_from_xyz(z, pos, smiles=smi, name='dsgdb9nsd_133857')
    assert issubclass(GraphMatchError, FeaturizationError)


def test_template_free_perception(qm9):
    for idx in [1, 19, 120, 200]:
        z, pos, smi = qm9[idx]
        mol = mol_from_xyz(z, pos)
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == z.tolist()
        assert _canonical(mol) == _canonical(smi)


def test_from_xyz_matches_smiles_features(qm9):
    """from_xyz gives the official features of the SMILES graph, permuted
    into xyz order, and the DFT heavy-atom coordinates."""
    from pyg_unimol2.data.featurize import from_mol
    for idx in [1, 19, 105, 120, 180, 240, 300]:
        z, pos, smi = qm9[idx]
        data = from_xyz(z, pos, smiles=smi, name=f'gdb_{idx}')
        heavy = z != 1
        assert data.z.tolist() == z[heavy].tolist()
        assert np.allclose(data.pos.numpy(), pos[heavy], atol=1e-6)
        assert bool(data.has_graph)
        assert data.name == f'gdb_{idx}'
        ref_mol = Chem.MolFromSmiles(smi)
        Chem.rdDepictor.Compute2DCoords(ref_mol)
        ref = from_mol(ref_mol)
        n = data.z.numel()
        # Same multisets of per-atom and per-pair codes.
        for key in ['atom_feat', 'x']:
            a = sorted(map(tuple, getattr(data, key).tolist()))
            b = sorted(map(tuple, getattr(ref, key).tolist()))
            assert a == b, (idx, key)
        assert sorted(data.degree.tolist()) == sorted(ref.degree.tolist())
        assert sorted(data.spd.tolist()) == sorted(ref.spd.tolist())
        assert data.spd.numel() == n * n
        assert data.edge_index.size(1) == ref.edge_index.size(1)
