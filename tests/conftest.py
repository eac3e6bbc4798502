import gzip
import os
from pathlib import Path
from typing import List

import pytest
import torch
from rdkit import Chem

# pytest-xdist runs one worker per core: one thread each avoids
# oversubscribing the cores (OpenMP threads then wait on each other).
torch.set_num_threads(1)

#: ``shared/`` sits beside the repository (override with UNIMOL2_SHARED).
SHARED = Path(os.environ.get(
    'UNIMOL2_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
MOSES_TEST = SHARED / 'datasets' / 'moses' / 'test.csv.gz'
COMPAS_CSV = SHARED / 'datasets' / 'compas-1d' / 'compas-1D_b3lyp-d3bj_def2-svp.csv'


def read_moses(count: int, path: Path = MOSES_TEST) -> List[str]:
    """The first :obj:`count` SMILES of a MOSES split."""
    with gzip.open(path, 'rt') as f:
        next(f)
        return [next(f).strip() for _ in range(count)]


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f'shared data folder not found at {SHARED}')
    return SHARED


def mol_from_data(data) -> Chem.Mol:
    """RDKit molecule rebuilt from the OGB features of a Data object."""
    mol = Chem.RWMol()
    for z, row in zip(data.z.tolist(), data.x.tolist()):
        atom = Chem.Atom(z)
        atom.SetFormalCharge(row[3] - 5)
        atom.SetNumExplicitHs(row[4])
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    types = [Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE,
             Chem.BondType.AROMATIC]
    for (i, j), attr in zip(data.edge_index.t().tolist(),
                            data.edge_attr.tolist()):
        if i < j:
            mol.AddBond(i, j, types[attr[0]])
            if attr[0] == 3:
                mol.GetBondBetweenAtoms(i, j).SetIsAromatic(True)
                mol.GetAtomWithIdx(i).SetIsAromatic(True)
                mol.GetAtomWithIdx(j).SetIsAromatic(True)
    Chem.SanitizeMol(mol)
    return mol
