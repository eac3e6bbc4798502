"""Small files in the published layouts of the energy/force datasets (see
pyg_unimol2/data/formats/), holding real molecules: RDKit ETKDG conformers,
hydrogens included, of MOSES SMILES, with arbitrary finite labels in each
file's units. Every writer returns what the reader must give back, by record
name, in Angstrom, eV and eV/Angstrom."""
from pathlib import Path
from typing import Dict, NamedTuple, Optional

import h5py
import numpy as np
from conftest import read_moses
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolDescriptors

from pyg_unimol2.data.geometry import BOHR_ANGSTROM, HARTREE_EV, KCAL_MOL_EV

#: Three MOSES molecules with distinct formulas, and a charged one (SPICE,
#: ASE) for the total charge.
SMILES = read_moses(3)
CHARGED = 'CC(=O)[O-]'


class Expected(NamedTuple):
    """A record as a reader must yield it (units of the library)."""
    z: np.ndarray
    pos: np.ndarray
    energy: Optional[float]
    forces: Optional[np.ndarray]
    charge: int = 0


class Molecule(NamedTuple):
    formula: str
    z: np.ndarray  #: [n]
    pos: np.ndarray  #: [C, n, 3] Angstrom
    smiles: str  #: mapped SMILES with explicit hydrogens (as SPICE)
    charge: int


def molecule(smiles: str, count: int, seed: int = 0) -> Molecule:
    """``count`` ETKDG conformers of :obj:`smiles` with hydrogens."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = list(AllChem.EmbedMultipleConfs(mol, count, randomSeed=seed))
    assert len(ids) == count
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    pos = np.stack([mol.GetConformer(i).GetPositions() for i in ids])
    mapped = Chem.Mol(mol)
    for atom in mapped.GetAtoms():
        atom.SetAtomMapNum(atom.GetIdx() + 1)
    return Molecule(rdMolDescriptors.CalcMolFormula(mol), z, pos,
                    Chem.MolToSmiles(mapped),
                    Chem.GetFormalCharge(mol))


def labels(rng: np.random.Generator, count: int, n: int, energy: float,
           force: float):
    """``[C]`` float64 energies near :obj:`energy` and ``[C, n, 3]``
    float32 forces of scale :obj:`force`."""
    return (energy + rng.normal(size=count),
            (force * rng.normal(size=(count, n, 3))).astype(np.float32))


def write_ani1x(path: Path, count: int = 3) -> Dict[str, Expected]:
    """``ani1x-release.h5``: a group per formula; the ``wb97x_dz`` level
    complete, ``ccsd(t)_cbs`` (energies only) NaN for conformer 0."""
    rng, expected = np.random.default_rng(1), {}
    with h5py.File(path, 'w') as f:
        for smiles in SMILES:
            m = molecule(smiles, count)
            g = f.create_group(m.formula)
            n = m.z.shape[0]
            g['atomic_numbers'] = m.z.astype(np.uint8)
            g['coordinates'] = m.pos.astype(np.float32)
            energy, forces = labels(rng, count, n, -300.0, 0.05)
            g['wb97x_dz.energy'], g['wb97x_dz.forces'] = energy, forces
            g['wb97x_tz.energy'], g['wb97x_tz.forces'] = labels(
                rng, count, n, -300.5, 0.05)
            cc = rng.normal(size=count) - 299.0
            cc[0] = np.nan
            g['ccsd(t)_cbs.energy'] = cc
            g['wb97x_dz.dipole'] = rng.normal(size=(count, 3))
            for c in range(count):
                expected[f'{path.name}:{m.formula}/{c}'] = Expected(
                    m.z, m.pos[c].astype(np.float32).astype(np.float64),
                    energy[c] * HARTREE_EV,
                    forces[c].astype(np.float64) * HARTREE_EV)
    return expected


def _t1x_datasets(g: h5py.Group, m: Molecule, pos, energy, forces) -> None:
    g['atomic_numbers'] = m.z.astype(np.int64)
    g['positions'] = pos
    g['wB97x_6-31G(d).energy'] = energy
    g['wB97x_6-31G(d).atomization_energy'] = energy + 100.0
    g['wB97x_6-31G(d).forces'] = forces


def write_t1x(path: Path, count: int = 4) -> Dict[str, Expected]:
    """``Transition1x.h5``: ``data/<formula>/rxn<k>`` with its path images
    and ``reactant``/``product``/``transition_state`` subgroups; ``train``
    links to the first reaction, ``test`` to the others. Returns the
    records of ``split='data'`` in the reader's order."""
    rng, expected = np.random.default_rng(2), {}
    with h5py.File(path, 'w') as f:
        for k, smiles in enumerate(SMILES):
            m = molecule(smiles, count, seed=k)
            where = f'{m.formula}/rxn{k:04d}'
            g = f.create_group(f'data/{where}')
            energy, forces = labels(rng, count, m.z.shape[0], -9000.0, 1.0)
            _t1x_datasets(g, m, m.pos, energy, forces)
            ends = dict(reactant=0, product=count - 1,
                        transition_state=count // 2)
            for end, c in ends.items():
                _t1x_datasets(g.create_group(end), m, m.pos[c:c + 1],
                              energy[c:c + 1], forces[c:c + 1])
            f[f'{"train" if k == 0 else "test"}/{where}'] = g  # hard link
            for end in ('reactant', 'product'):
                c = ends[end]
                expected[f'{path.name}:data/{where}/{end}'] = Expected(
                    m.z, m.pos[c], energy[c], forces[c].astype(np.float64))
            for c in range(count):
                expected[f'{path.name}:data/{where}/{c}'] = Expected(
                    m.z, m.pos[c], energy[c], forces[c].astype(np.float64))
    return expected


def write_spice(path: Path, count: int = 3) -> Dict[str, Expected]:
    """``SPICE-2.0.1.hdf5``: a group per molecule, atomic units, the
    gradient (not the forces), a mapped SMILES giving the charge."""
    rng, expected = np.random.default_rng(3), {}
    with h5py.File(path, 'w') as f:
        for k, smiles in enumerate(SMILES + [CHARGED]):
            m = molecule(smiles, count, seed=k)
            name = str(103915357 + k)  # PubChem substance ids
            g = f.create_group(name)
            n = m.z.shape[0]
            g.create_dataset('subset', data=['SPICE PubChem Set 1 Single '
                                             'Points Dataset v1.3'],
                             dtype=h5py.string_dtype())
            g.create_dataset('smiles', data=[m.smiles],
                             dtype=h5py.string_dtype())
            g.create_dataset('atomic_numbers', data=m.z, dtype=np.int16)
            bohr = (m.pos / BOHR_ANGSTROM).astype(np.float32)
            g.create_dataset('conformations', data=bohr).attrs['units'] = \
                'bohr'
            energy, gradient = labels(rng, count, n, -500.0, 0.02)
            g.create_dataset('dft_total_energy', data=energy,
                             dtype=np.float64).attrs['units'] = 'hartree'
            g.create_dataset('dft_total_gradient', data=gradient,
                             dtype=np.float32).attrs['units'] = \
                'hartree/bohr'
            g.create_dataset('formation_energy', data=energy + 1.0)
            for c in range(count):
                expected[f'{path.name}:{name}/{c}'] = Expected(
                    m.z, bohr[c].astype(np.float64) * BOHR_ANGSTROM,
                    energy[c] * HARTREE_EV,
                    gradient[c].astype(np.float64) *
                    (-HARTREE_EV / BOHR_ANGSTROM), m.charge)
    return expected


def write_rmd17(path: Path, count: int = 4) -> Dict[str, Expected]:
    """``rmd17_<molecule>.npz`` of the first SMILES."""
    rng = np.random.default_rng(4)
    m = molecule(SMILES[0], count)
    energy, forces = labels(rng, count, m.z.shape[0], -4e5, 20.0)
    np.savez(path, nuclear_charges=m.z.astype(np.uint8), coords=m.pos,
             energies=energy, forces=forces.astype(np.float64),
             old_indices=np.arange(count) * 7,
             old_energies=energy + 1.0, old_forces=forces + 1.0)
    return {f'{path.name}:{c}': Expected(
        m.z, m.pos[c], energy[c] * KCAL_MOL_EV,
        forces[c].astype(np.float64) * KCAL_MOL_EV) for c in range(count)}


def write_md22(path: Path, count: int = 4, e_unit: str = 'kcal/mol',
               r_unit: str = 'Ang') -> Dict[str, Expected]:
    """``md22_<name>.npz`` (sGDML) of the second SMILES, in the units
    given (``'kcal/mol'``/``'eV'``, ``'Ang'``/``'au'``)."""
    rng = np.random.default_rng(5)
    m = molecule(SMILES[1], count)
    to_ev = {'kcal/mol': KCAL_MOL_EV, 'eV': 1.0}[e_unit]
    to_angstrom = {'Ang': 1.0, 'au': BOHR_ANGSTROM}[r_unit]
    energy, forces = labels(rng, count, m.z.shape[0], -6e5, 20.0)
    R = m.pos / to_angstrom
    np.savez(path, type='d', code_version='1.0.0', name=path.stem,
             theory='PBE+MBD/tight', z=m.z, R=R, E=energy[:, None],
             F=forces.astype(np.float64), r_unit=r_unit, e_unit=e_unit,
             E_min=energy.min(), E_max=energy.max(), md5='0' * 32)
    return {f'{path.name}:{c}': Expected(
        m.z, R[c] * to_angstrom, energy[c] * to_ev,
        forces[c].astype(np.float64) * (to_ev / to_angstrom))
        for c in range(count)}


def _atoms(count: int):
    """ASE structures of the third SMILES (neutral, conformers) and of the
    charged one, with energies (eV) and forces (eV/Angstrom)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng, out = np.random.default_rng(6), []
    for k, smiles in enumerate([SMILES[2], CHARGED]):
        m = molecule(smiles, count, seed=k)
        energy, forces = labels(rng, count, m.z.shape[0], -2e4, 1.0)
        for c in range(count):
            atoms = Atoms(numbers=m.z, positions=m.pos[c])
            atoms.calc = SinglePointCalculator(
                atoms, energy=energy[c], forces=forces[c].astype(np.float64))
            out.append((atoms, m.charge))
    return out


def _expected_atoms(atoms, charge: int) -> Expected:
    return Expected(atoms.numbers, atoms.positions,
                    atoms.calc.results['energy'],
                    atoms.calc.results['forces'], charge)


def write_extxyz(path: Path, count: int = 3) -> Dict[str, Expected]:
    """An extended XYZ file; the total charge in each frame's info."""
    import ase.io

    frames = []
    for atoms, charge in _atoms(count):
        atoms.info['charge'] = charge
        frames.append(atoms)
    ase.io.write(path, frames, format='extxyz')
    return {f'{path.name}:{i}': _expected_atoms(a, a.info['charge'])
            for i, a in enumerate(frames)}


def write_ase_db(path: Path, count: int = 3) -> Dict[str, Expected]:
    """An ASE database; the charge of neutral rows as a ``charge`` key,
    that of charged ones as initial charges on the carboxylate oxygens."""
    import ase.db
    from ase.calculators.singlepoint import SinglePointCalculator

    expected = {}
    with ase.db.connect(path) as db:
        for atoms, charge in _atoms(count):
            if charge:
                charges = np.zeros(len(atoms))
                charges[np.flatnonzero(atoms.numbers == 8)] = charge / 2
                results = atoms.calc.results
                atoms.set_initial_charges(charges)  # invalidates the calc
                atoms.calc = SinglePointCalculator(atoms, **results)
                row = db.write(atoms, mol='acetate')
            else:
                row = db.write(atoms, charge=0)
            expected[f'{path.name}:{row}'] = _expected_atoms(atoms, charge)
    return expected


#: The file of each format written by :func:`write_all`.
FILES_BY_FORMAT = dict(ani1x='ani1x-release.h5', t1x='Transition1x.h5',
                       spice='SPICE-2.0.1.hdf5', rmd17='rmd17_aspirin.npz',
                       md22='md22_Ac-Ala3-NHMe.npz', ase='frames.extxyz')


def write_all(folder: Path) -> Dict[str, Dict[str, Expected]]:
    """One file of every format in :obj:`folder` (:data:`FILES_BY_FORMAT`),
    what each must give back by format name."""
    writers = dict(ani1x=write_ani1x, t1x=write_t1x, spice=write_spice,
                   rmd17=write_rmd17, md22=write_md22, ase=write_extxyz)
    return {fmt: writers[fmt](folder / name)
            for fmt, name in FILES_BY_FORMAT.items()}


