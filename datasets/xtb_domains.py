#!/usr/bin/env python
r"""Three small energy/force domains computed with GFN2-xTB (tblite).

No DFT energy/force data set can be downloaded on the project's machines.
This script makes real semi-empirical labels offline instead: GFN2-xTB
total energies and analytic forces from the PyPI package ``tblite``,
written in the layouts and units of three published data sets, so that the
standard readers of those files read them unchanged. The level of theory is
GFN2-xTB everywhere, whatever the key names say (``wb97x_dz.*``,
``dft_*``). See ``datasets/xtb_domains.md`` for the full description.

========= ============================ =====================================
domain    structures                   file (layout of the published set)
========= ============================ =====================================
``ani1x`` QM9 molecules (qm9pack DFT   ``ani1x_gfn2xtb.h5``: one group per
          geometries, H kept): random  formula; ``coordinates`` Angstrom,
          Gaussian displacements +     ``wb97x_dz.energy`` Hartree,
          short Langevin MD snapshots  ``wb97x_dz.forces`` Hartree/Angstrom
``spice`` drug-like MOSES molecules:   ``spice_gfn2xtb.hdf5``: one group per
          ETKDG conformers, MMFF-      molecule; ``conformations`` Bohr,
          relaxed, + displaced copies  ``dft_total_energy`` Hartree,
                                       ``dft_total_gradient`` Hartree/Bohr
``rmd17`` Langevin MD trajectories of  ``rmd17/npz_data/rmd17_<name>.npz``:
          named molecules (aspirin,    ``coords`` Angstrom, ``energies``
          ethanol, ...), subsampled    kcal/mol, ``forces`` kcal/mol/Angstrom
========= ============================ =====================================

Next to them: ``failures.csv`` (``domain, molecule, reason`` of every
molecule that was skipped) and ``manifest.json`` (counts, settings, seeds,
versions, times, content digests).

Everything is seeded: every molecule draws from its own generator, made
from ``--seed``, the domain and the molecule's identity, and every label is
computed at exactly the stored (rounded) coordinates, so the same command
gives the same arrays, with any number of workers. Molecules run in the
crash-safe pool :func:`pyg_unimol2.data.workers.imap_isolated` with a time
limit each. A molecule whose xTB calculation fails (SCF not converged), whose
embedding fails, or that falls apart in MD, is skipped and reported.

Usage::

    python datasets/xtb_domains.py --out /work/xtb_domains  # 6-13 min, 2 cores
    python datasets/xtb_domains.py --out /tmp/xtb --small   # seconds (tests)

Needs ``pip install -r requirements-xtb.txt`` (``make xtb-data`` does it).
"""
import argparse
import csv
import dataclasses
import hashlib
import itertools
import json
import os
import platform
import sys
import time
import zlib
from collections import Counter, OrderedDict
from importlib import metadata
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pyg_unimol2.bench.shared import shared_datasets
from pyg_unimol2.data.geometry import BOHR_ANGSTROM, HARTREE_EV, KCAL_MOL_EV
from pyg_unimol2.data.workers import ItemFailure, imap_isolated

__all__ = ['Settings', 'SMALL', 'Xtb', 'XtbError', 'xtb_energy_gradient',
           'build', 'main', 'ANI1X_FILE', 'SPICE_FILE', 'RMD17_DIR',
           'RMD17_SMILES', 'HARTREE_KCAL_MOL']

#: kcal/mol per Hartree (from the constants of ``pyg_unimol2.data.geometry``).
HARTREE_KCAL_MOL = HARTREE_EV / KCAL_MOL_EV
#: Angstrom/fs^2 per eV/(Angstrom amu); also (Angstrom/fs)^2 per eV/amu.
_ACCEL = 9.64853321233e-3
#: Boltzmann constant in eV/K (CODATA 2018).
_KB_EV = 8.617333262e-5
#: Boltzmann constant in Hartree/K (CODATA 2018).
_KB_HARTREE = 3.166811563e-6

ANI1X_FILE = 'ani1x_gfn2xtb.h5'
SPICE_FILE = 'spice_gfn2xtb.hdf5'
RMD17_DIR = os.path.join('rmd17', 'npz_data')
FAILURES_FILE = 'failures.csv'
MANIFEST_FILE = 'manifest.json'
MOSES_TRAIN = str(shared_datasets() / 'moses' / 'train.csv.gz')
LEVEL = 'GFN2-xTB'
SPICE_SUBSET = 'MOSES GFN2-xTB'
#: Bump when the content made from the same settings changes.
FORMAT_VERSION = 1

#: The molecules of rMD17 (its file names) and SMILES to build them from.
RMD17_SMILES: Dict[str, str] = OrderedDict([
    ('aspirin', 'CC(=O)Oc1ccccc1C(=O)O'),
    ('azobenzene', 'c1ccc(cc1)/N=N/c1ccccc1'),
    ('benzene', 'c1ccccc1'),
    ('ethanol', 'CCO'),
    ('malonaldehyde', 'O=CCC=O'),
    ('naphthalene', 'c1ccc2ccccc2c1'),
    ('paracetamol', 'CC(=O)Nc1ccc(O)cc1'),
    ('salicylic', 'OC(=O)c1ccccc1O'),
    ('toluene', 'Cc1ccccc1'),
    ('uracil', 'O=c1cc[nH]c(=O)[nH]1'),
])
_DOMAINS = ('ani1x', 'spice', 'rmd17')
_DOMAIN_CODE = {'ani1x': 1, 'spice': 2, 'rmd17': 3}


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class Settings:
    """Sizes and parameters of a build; each is a command-line option
    (``ani_molecules`` is ``--ani-molecules``)."""
    seed: int = 0  #: root seed of every random draw
    domains: str = 'ani1x,spice,rmd17'  #: comma-separated domains to build
    workers: int = max(1, min(2, os.cpu_count() or 1))  #: worker processes
    time_limit: float = 600.0  #: seconds one molecule may take, else skipped
    # GFN2-xTB (tblite) -----------------------------------------------------
    xtb_accuracy: float = 1.0  #: tblite SCC accuracy (lower is tighter)
    xtb_max_iter: int = 250  #: SCC iterations before "not converged"
    xtb_etemp: float = 300.0  #: electronic temperature, K
    # Langevin MD (BAOAB splitting of velocity Verlet) ----------------------
    md_dt: float = 0.5  #: time step, fs
    md_friction: float = 0.01  #: Langevin friction, 1/fs
    #: a displaced geometry more than this above its undisplaced one (eV)
    #: is drawn again
    max_excess_ev: float = 12.0
    # (a) ANI-1x-like ---------------------------------------------------------
    ani_molecules: int = 600  #: QM9 molecules drawn (seeded)
    ani_pool: int = 0  #: draw from the first N QM9 molecules (0: all)
    ani_displacements: int = 8  #: displaced geometries per molecule
    ani_rms_min: float = 0.05  #: rms displacement of an atom, Angstrom,
    ani_rms_max: float = 0.15  #: drawn uniformly per geometry
    ani_md_steps: int = 80  #: MD steps from the QM9 geometry
    ani_md_every: int = 10  #: keep every N-th MD step
    ani_md_temperature: float = 500.0  #: K
    # (b) SPICE-like ----------------------------------------------------------
    spice_molecules: int = 250  #: MOSES molecules drawn (seeded)
    spice_pool: int = 0  #: draw from the first N MOSES rows (0: all)
    moses: str = MOSES_TRAIN  #: the MOSES SMILES file (train split)
    spice_min_heavy: int = 20  #: heavy-atom range of the molecules drawn
    spice_max_heavy: int = 40
    spice_conformers: int = 4  #: ETKDG conformers per molecule
    spice_mmff: bool = True  #: MMFF-relax the conformers first
    spice_displacements: int = 2  #: displaced copies of each conformer
    spice_rms_min: float = 0.03  #: rms displacement of an atom, Angstrom,
    spice_rms_max: float = 0.10  #: drawn uniformly per geometry
    # (c) rMD17-like ----------------------------------------------------------
    rmd17_molecules: str = ','.join(RMD17_SMILES)  #: the ten of rMD17
    rmd17_temperature: float = 500.0  #: K (MD17 was run at 500 K)
    rmd17_equilibration: int = 400  #: MD steps discarded first
    rmd17_steps: int = 8000  #: MD steps after equilibration
    rmd17_every: int = 10  #: keep every N-th step

    def domain_list(self) -> List[str]:
        out = [d.strip() for d in self.domains.split(',') if d.strip()]
        bad = [d for d in out if d not in _DOMAINS]
        if bad or not out:
            raise ValueError(f'--domains: unknown {bad}, choose from '
                             f'{",".join(_DOMAINS)}')
        return out

    def rmd17_list(self) -> List[str]:
        out = [m.strip() for m in self.rmd17_molecules.split(',')
               if m.strip()]
        bad = [m for m in out if m not in RMD17_SMILES]
        if bad:
            raise ValueError(f'--rmd17-molecules: unknown {bad}, choose from '
                             f'{",".join(RMD17_SMILES)}')
        return out


#: ``--small``: a build of every domain in well under 30 s (for tests).
SMALL = dict(
    time_limit=120.0,
    ani_molecules=4, ani_pool=1000, ani_displacements=2, ani_md_steps=20,
    ani_md_every=10,
    spice_molecules=2, spice_pool=5000, spice_conformers=2,
    spice_displacements=1,
    rmd17_molecules='ethanol,malonaldehyde', rmd17_equilibration=20,
    rmd17_steps=60, rmd17_every=10,
)


# ---------------------------------------------------------------------------
# GFN2-xTB
# ---------------------------------------------------------------------------
class XtbError(Exception):
    """A calculation that did not give usable labels (reported, skipped)."""


def _silent(_message: str) -> None:
    """tblite logger that drops its output."""


def _limit_omp() -> None:
    """One OpenMP thread for tblite, which links the system ``libgomp``
    (not the copy bundled with torch): small molecules gain nothing from
    more, and workers would oversubscribe the cores."""
    try:
        import ctypes
        ctypes.CDLL('libgomp.so.1').omp_set_num_threads(1)
    except (OSError, AttributeError):  # pragma: no cover - no libgomp
        pass


def _one_omp_thread() -> None:
    """Worker initializer: one OpenMP thread."""
    os.environ['OMP_NUM_THREADS'] = '1'
    _limit_omp()


class Xtb:
    """GFN2-xTB energy and gradient of one molecule at given coordinates.

    The converged wavefunction of the previous call is the initial guess of
    the next one (``restart``), which saves SCC cycles along a trajectory
    or over displaced copies; the sequence of calls is deterministic, so the
    results are too.

    Returns ``(energy, gradient)`` in Hartree and Hartree/Bohr; raises
    :class:`XtbError` when the SCC does not converge or a value is not
    finite.
    """

    def __init__(self, z: np.ndarray, charge: int = 0,
                 settings: Optional[Settings] = None,
                 restart: bool = True) -> None:
        self.z = np.asarray(z, dtype=np.int32)
        self.charge = int(charge)
        electrons = int(self.z.sum()) - self.charge
        self.uhf = electrons % 2
        self.settings = settings or Settings()
        self.restart = restart
        self.calc = None
        self.result = None
        self.calls = 0

    def __call__(self, pos: np.ndarray) -> Tuple[float, np.ndarray]:
        from tblite.exceptions import TBLiteRuntimeError
        from tblite.interface import Calculator
        bohr = np.ascontiguousarray(pos, dtype=np.float64) / BOHR_ANGSTROM
        s = self.settings
        try:
            if self.calc is None:
                _limit_omp()
                self.calc = Calculator(LEVEL, self.z, bohr,
                                       charge=float(self.charge),
                                       uhf=self.uhf, logger=_silent)
                self.calc.set('verbosity', 0)
                self.calc.set('accuracy', float(s.xtb_accuracy))
                self.calc.set('max-iter', int(s.xtb_max_iter))
                self.calc.set('temperature', float(s.xtb_etemp) * _KB_HARTREE)
            else:
                self.calc.update(bohr)
            guess = self.result if self.restart else None
            self.result = self.calc.singlepoint(guess)
            energy = float(self.result.get('energy'))
            gradient = np.array(self.result.get('gradient'), dtype=np.float64)
        except TBLiteRuntimeError as e:
            self.result = None
            raise XtbError(f'xTB failed: {e}') from None
        self.calls += 1
        if not (np.isfinite(energy) and np.isfinite(gradient).all()):
            self.result = None
            raise XtbError('xTB gave a non-finite energy or gradient')
        return energy, gradient.reshape(-1, 3)


def xtb_energy_gradient(z: Sequence[int], pos: np.ndarray, charge: int = 0,
                        settings: Optional[Settings] = None
                        ) -> Tuple[float, np.ndarray]:
    """GFN2-xTB energy (Hartree) and gradient (Hartree/Bohr) of one
    structure (coordinates in Angstrom), from a fresh start."""
    return Xtb(np.asarray(z), charge, settings, restart=False)(pos)


# ---------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------
def _rng(seed: int, domain: str, key: Optional[int] = None
         ) -> np.random.Generator:
    """The generator of one molecule (its :obj:`key`), independent of the
    other molecules drawn and of the worker that runs it; without a key,
    the generator that draws the domain's molecules."""
    tail = [0] if key is None else [1, key]
    return np.random.default_rng(
        np.random.SeedSequence([seed, _DOMAIN_CODE[domain]] + tail))


def _int_seed(rng: np.random.Generator) -> int:
    """A 31-bit seed for RDKit, drawn from :obj:`rng`."""
    return int(rng.integers(0, 2**31 - 1))


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode('utf-8'))


def _as_f32_angstrom(pos: np.ndarray) -> np.ndarray:
    """Coordinates as stored in Angstrom float32 (ANI-1x layout)."""
    return np.asarray(pos, np.float32).astype(np.float64)


def _as_f32_bohr(pos: np.ndarray) -> np.ndarray:
    """Coordinates as stored in Bohr float32 (SPICE layout), in Angstrom."""
    return (np.asarray(np.asarray(pos) / BOHR_ANGSTROM, np.float32)
            .astype(np.float64) * BOHR_ANGSTROM)


def _as_f64(pos: np.ndarray) -> np.ndarray:
    return np.asarray(pos, np.float64)


_RCOV: Dict[int, float] = {}


def _rcov(z: np.ndarray) -> np.ndarray:
    from rdkit import Chem
    table = Chem.GetPeriodicTable()
    for a in set(z.tolist()) - set(_RCOV):
        _RCOV[a] = table.GetRcovalent(int(a))
    return np.array([_RCOV[a] for a in z.tolist()])


def _intact(z: np.ndarray, pos: np.ndarray) -> Optional[str]:
    """:obj:`None` if the structure is one molecule without clashes, else
    why not: atoms closer than 0.5 Angstrom, or more than one fragment when
    atoms within 1.5x the sum of their covalent radii are bonded."""
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    n = len(z)
    if n > 1 and d[~np.eye(n, dtype=bool)].min() < 0.5:
        return 'atoms closer than 0.5 A'
    r = _rcov(z)
    bonded = d < 1.5 * (r[:, None] + r[None])
    seen = np.zeros(n, dtype=bool)
    seen[0] = True
    frontier = [0]
    while frontier:
        i = frontier.pop()
        new = np.flatnonzero(bonded[i] & ~seen)
        seen[new] = True
        frontier.extend(new.tolist())
    if not seen.all():
        return f'fell apart into fragments ({int((~seen).sum())} atoms off)'
    return None


def _displaced(xtb: 'Xtb', pos: np.ndarray, energy: float,
               rng: np.random.Generator, rms_min: float, rms_max: float,
               max_excess_ev: float, quantize
               ) -> Tuple[np.ndarray, float, np.ndarray]:
    """:obj:`pos` displaced by isotropic Gaussian noise, with its xTB
    energy and gradient. The rms displacement of an atom, ``d``, is drawn
    uniformly in ``[rms_min, rms_max]`` (Angstrom): each coordinate moves by
    a normal deviate of standard deviation ``d / sqrt(3)``. A geometry that
    is not one intact molecule, or more than :obj:`max_excess_ev` above
    :obj:`energy` (that of :obj:`pos`, Hartree), is drawn again, up to 20
    times."""
    z = xtb.z
    for _ in range(20):
        sigma = rng.uniform(rms_min, rms_max) / np.sqrt(3.0)
        x = quantize(pos + rng.normal(0.0, sigma, pos.shape))
        if _intact(z, x) is not None:
            continue
        e, g = xtb(x)
        if (e - energy) * HARTREE_EV <= max_excess_ev:
            return x, e, g
    raise XtbError('no intact displaced geometry within '
                   f'{max_excess_ev:g} eV in 20 draws')


def _masses(z: np.ndarray) -> np.ndarray:
    from rdkit import Chem
    table = Chem.GetPeriodicTable()
    return np.array([table.GetAtomicWeight(int(a)) for a in z])


def langevin_md(xtb: Xtb, z: np.ndarray, pos: np.ndarray,
                rng: np.random.Generator, steps: int, every: int,
                temperature: float, dt: float, friction: float,
                quantize=_as_f64, equilibration: int = 0
                ) -> List[Tuple[int, np.ndarray, float, np.ndarray]]:
    r"""Langevin molecular dynamics on the xTB surface (BAOAB: velocity
    Verlet with an Ornstein-Uhlenbeck velocity update in the middle of each
    step), from :obj:`pos` with Maxwell-Boltzmann velocities at
    :obj:`temperature` (K). Time step :obj:`dt` in fs, friction in 1/fs.

    Runs ``equilibration + steps`` steps and returns every
    :obj:`every`-th step after the equilibration as ``(step, pos, energy,
    gradient)`` (Angstrom, Hartree, Hartree/Bohr; ``step`` counts from 0 at
    :obj:`pos`). Coordinates pass through :obj:`quantize` before each force
    call, so each frame's labels belong to its stored coordinates. Raises
    :class:`XtbError` when the molecule falls apart.
    """
    m = _masses(z)[:, None]
    kt = _KB_EV * temperature
    v = rng.normal(0.0, 1.0, pos.shape) * np.sqrt(kt / m * _ACCEL)
    v -= (m * v).sum(0) / m.sum()  # no drift of the centre of mass
    c1 = np.exp(-friction * dt)
    c2 = np.sqrt((1.0 - c1 * c1) * kt / m * _ACCEL)
    x = quantize(pos)
    energy, grad = xtb(x)
    to_accel = -HARTREE_EV / BOHR_ANGSTROM / m * _ACCEL  # Ha/Bohr -> A/fs^2
    a = grad * to_accel
    frames = []
    for step in range(1, equilibration + steps + 1):
        v += 0.5 * dt * a
        x = x + 0.5 * dt * v
        v = c1 * v + c2 * rng.normal(0.0, 1.0, v.shape)
        x = quantize(x + 0.5 * dt * v)
        energy, grad = xtb(x)
        a = grad * to_accel
        v += 0.5 * dt * a
        keep = step > equilibration and (step - equilibration) % every == 0
        if keep or step % 50 == 0:
            why = _intact(z, x)
            if why is not None:
                raise XtbError(f'molecule {why} at MD step {step}')
        if keep:
            frames.append((step, x.copy(), energy, grad))
    return frames


# ---------------------------------------------------------------------------
# Per-molecule jobs (run in worker processes)
# ---------------------------------------------------------------------------
def _hill_order(z: np.ndarray) -> np.ndarray:
    """Atom permutation sorting by element in Hill order (C, H, then by
    symbol), stable: every isomer of a formula gets the same
    ``atomic_numbers``, as one ANI-1x group needs."""
    from rdkit import Chem
    table = Chem.GetPeriodicTable()

    def key(a: int) -> Tuple[int, str]:
        sym = table.GetElementSymbol(int(a))
        return ({'C': 0, 'H': 1}.get(sym, 2), sym)
    keys = [key(a) for a in z.tolist()]
    return np.array(sorted(range(len(z)), key=lambda i: keys[i]))


def hill_formula(z: Sequence[int]) -> str:
    """Hill formula, e.g. ``C2H6O`` (ANI-1x group names)."""
    from rdkit import Chem
    table = Chem.GetPeriodicTable()
    counts = Counter(table.GetElementSymbol(int(a)) for a in z)
    order = [s for s in ('C', 'H') if s in counts] if 'C' in counts else []
    order += sorted(s for s in counts if s not in order)
    return ''.join(s + (str(counts[s]) if counts[s] > 1 else '')
                   for s in order)


def _ani_job(item: dict) -> dict:
    s: Settings = item['settings']
    z, pos = item['z'], item['pos']
    rng = _rng(s.seed, 'ani1x', item['key'])
    xtb = Xtb(z, 0, s)
    coords, energies, grads, kinds = [], [], [], []
    base = _as_f32_angstrom(pos)
    e_base = xtb(base)[0] if s.ani_displacements else 0.0
    for _ in range(s.ani_displacements):
        x, e, g = _displaced(xtb, base, e_base, rng, s.ani_rms_min,
                             s.ani_rms_max, s.max_excess_ev,
                             _as_f32_angstrom)
        coords.append(x), energies.append(e), grads.append(g)
        kinds.append(0)
    if s.ani_md_steps > 0:
        for _, x, e, g in langevin_md(
                xtb, z, base, rng, s.ani_md_steps, s.ani_md_every,
                s.ani_md_temperature, s.md_dt, s.md_friction,
                quantize=_as_f32_angstrom):
            coords.append(x), energies.append(e), grads.append(g)
            kinds.append(1)
    return dict(coords=np.array(coords), energy=np.array(energies),
                gradient=np.array(grads), kind=np.array(kinds, np.int8),
                calls=xtb.calls)


#: Stereoisomers tried, in turn, for a molecule with unassigned stereo.
_MAX_ISOMERS = 16


def _embed(smiles: str, count: int, seed: int, mmff: bool):
    """Hydrogen-complete RDKit molecule with up to :obj:`count` ETKDG
    conformers (seeded, one thread), MMFF-relaxed if :obj:`mmff`.

    Unassigned stereocentres are set first, so that every conformer is the
    same stereoisomer and the SMILES says which: the stereoisomers RDKit
    enumerates (in its deterministic order) are tried in turn and the first
    that embeds is kept (an arbitrary assignment can be impossible, e.g. the
    bridgeheads of an adamantane)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Chem.EnumerateStereoisomers import (EnumerateStereoisomers,
                                                   StereoEnumerationOptions)
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise XtbError('RDKit cannot parse the SMILES')
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.numThreads = 1
    params.pruneRmsThresh = 0.1
    options = StereoEnumerationOptions(onlyUnassigned=True, unique=True,
                                       maxIsomers=_MAX_ISOMERS)
    isomers = [Chem.AddHs(m) for m in EnumerateStereoisomers(mol, options)]
    # An impossible isomer takes seconds to fail a full embedding: where
    # there is a choice, a quick seeded trial (10 attempts) screens each
    # candidate first; the first isomer is the last resort.
    trial = AllChem.ETKDGv3()
    trial.randomSeed, trial.numThreads, trial.maxIterations = seed, 1, 10
    screened = (m for m in isomers if len(isomers) == 1 or
                AllChem.EmbedMolecule(Chem.Mol(m), trial) == 0)
    for mol in itertools.chain(screened, isomers[:1]):
        cids = list(AllChem.EmbedMultipleConfs(mol, count, params))
        if cids:
            break
    else:
        raise XtbError(f'ETKDG embedding failed ({len(isomers)} '
                       'stereoisomers tried)')
    if mmff and AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=2000)
    return mol, cids


def _mapped_smiles(mol) -> str:
    """SMILES with explicit hydrogens and atom maps ``i + 1`` for atom
    ``i`` (SPICE's ``smiles``: the atom order of ``conformations``)."""
    from rdkit import Chem
    m = Chem.Mol(mol)
    for atom in m.GetAtoms():
        atom.SetAtomMapNum(atom.GetIdx() + 1)
    return Chem.MolToSmiles(m)


def _spice_job(item: dict) -> dict:
    from rdkit import rdBase
    s: Settings = item['settings']
    rng = _rng(s.seed, 'spice', item['key'])
    with rdBase.BlockLogs():
        mol, cids = _embed(item['smiles'], s.spice_conformers,
                           _int_seed(rng), s.spice_mmff)
        mapped = _mapped_smiles(mol)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int64)
    charge = sum(a.GetFormalCharge() for a in mol.GetAtoms())
    xtb = Xtb(z, charge, s)
    coords, energies, grads = [], [], []
    for cid in cids:
        x0 = _as_f32_bohr(mol.GetConformer(cid).GetPositions())
        why = _intact(z, x0)
        if why is not None:
            raise XtbError(f'conformer {cid}: {why}')
        e0, g0 = xtb(x0)
        coords.append(x0), energies.append(e0), grads.append(g0)
        for _ in range(s.spice_displacements):
            x, e, g = _displaced(xtb, x0, e0, rng, s.spice_rms_min,
                                 s.spice_rms_max, s.max_excess_ev,
                                 _as_f32_bohr)
            coords.append(x), energies.append(e), grads.append(g)
    return dict(z=z, smiles=mapped, charge=charge, coords=np.array(coords),
                energy=np.array(energies), gradient=np.array(grads),
                conformers=len(cids), calls=xtb.calls)


def _rmd17_job(item: dict) -> dict:
    from rdkit import rdBase
    s: Settings = item['settings']
    rng = _rng(s.seed, 'rmd17', item['key'])
    with rdBase.BlockLogs():
        mol, cids = _embed(item['smiles'], 1, _int_seed(rng), True)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int64)
    xtb = Xtb(z, 0, s)
    frames = langevin_md(
        xtb, z, mol.GetConformer(cids[0]).GetPositions(), rng,
        s.rmd17_steps, s.rmd17_every, s.rmd17_temperature, s.md_dt,
        s.md_friction, quantize=_as_f64, equilibration=s.rmd17_equilibration)
    return dict(z=z, steps=np.array([f[0] for f in frames], np.int64),
                coords=np.array([f[1] for f in frames]),
                energy=np.array([f[2] for f in frames]),
                gradient=np.array([f[3] for f in frames]), calls=xtb.calls)


_JOBS = {'ani1x': _ani_job, 'spice': _spice_job, 'rmd17': _rmd17_job}


def _job(item: dict) -> dict:
    """Runs one molecule; an expected failure is returned, not raised."""
    start = time.process_time()
    try:
        out = _JOBS[item['domain']](item)
    except XtbError as e:
        out = dict(failed=str(e))
    out['cpu'] = time.process_time() - start
    return out


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------
def _ani_items(s: Settings) -> List[dict]:
    """QM9 molecules drawn without replacement, atoms in Hill order."""
    from pyg_unimol2.datasets.qm9 import read_qm9pack
    records = read_qm9pack(limit=s.ani_pool or None)
    rng = _rng(s.seed, 'ani1x')
    count = min(s.ani_molecules, len(records))
    items = []
    for k in rng.choice(len(records), count, replace=False).tolist():
        rec = records[k]
        order = _hill_order(rec.z)
        items.append(dict(domain='ani1x', key=rec.idx,
                          name=f'dsgdb9nsd_{rec.idx:06d}', smiles=rec.smiles,
                          z=rec.z[order], pos=rec.pos[order], settings=s))
    return items


def _spice_items(s: Settings) -> List[dict]:
    """MOSES molecules drawn in a seeded order; the first ones that are
    neutral and within the heavy-atom range are taken."""
    import pandas as pd
    from rdkit import Chem, rdBase
    smiles = pd.read_csv(s.moses, nrows=s.spice_pool or None)['SMILES'] \
        .tolist()
    rng = _rng(s.seed, 'spice')
    items = []
    with rdBase.BlockLogs():
        for row in rng.permutation(len(smiles)).tolist():
            if len(items) >= s.spice_molecules:
                break
            mol = Chem.MolFromSmiles(smiles[row])
            if mol is None or not (s.spice_min_heavy <= mol.GetNumAtoms()
                                   <= s.spice_max_heavy):
                continue
            if any(a.GetFormalCharge() for a in mol.GetAtoms()):
                continue
            items.append(dict(domain='spice', key=row,
                              name=f'moses-train-{row:07d}',
                              smiles=smiles[row], settings=s))
    return items


def _rmd17_items(s: Settings) -> List[dict]:
    return [dict(domain='rmd17', key=_name_key(name), name=name,
                 smiles=RMD17_SMILES[name], settings=s)
            for name in s.rmd17_list()]


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------
class _Digest:
    """SHA-256 over the arrays written, in order: equal for equal content
    (the files themselves hold creation times)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def add(self, key: str, value) -> None:
        a = np.asarray(value)
        self.h.update(f'{key}|{a.dtype.str}|{a.shape}|'.encode())
        self.h.update(a.tobytes() if a.dtype.kind not in 'OUS'
                      else repr(a.tolist()).encode())

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _write_ani1x(path: str, done: List[Tuple[dict, dict]],
                 meta: dict) -> dict:
    import h5py
    groups: Dict[str, list] = {}
    for item, res in done:
        groups.setdefault(hill_formula(item['z']), []).append((item, res))
    digest = _Digest()
    with h5py.File(path, 'w') as f:
        f.attrs.update(meta)
        for formula in sorted(groups):
            members = groups[formula]
            z = members[0][0]['z']
            assert all(np.array_equal(z, it['z']) for it, _ in members)
            coords = np.concatenate([r['coords'] for _, r in members])
            energy = np.concatenate([r['energy'] for _, r in members])
            forces = -np.concatenate([r['gradient'] for _, r in members]) \
                / BOHR_ANGSTROM
            source = np.concatenate([np.full(len(r['energy']), it['key'])
                                     for it, r in members])
            kind = np.concatenate([r['kind'] for _, r in members])
            g = f.create_group(formula)
            data = [('atomic_numbers', z.astype(np.uint8)),
                    ('coordinates', coords.astype(np.float32)),
                    ('wb97x_dz.energy', energy.astype(np.float64)),
                    ('wb97x_dz.forces', forces.astype(np.float32)),
                    ('gfn2_xtb.energy', energy.astype(np.float64)),
                    ('gfn2_xtb.forces', forces.astype(np.float32)),
                    ('qm9_index', source.astype(np.int64)),
                    ('sampling', kind.astype(np.int8))]
            for key, value in data:
                g.create_dataset(key, data=value)
                digest.add(f'{formula}/{key}', value)
    return dict(file=ANI1X_FILE, formulas=len(groups),
                content_sha256=digest.hexdigest())


def _write_spice(path: str, done: List[Tuple[dict, dict]],
                 meta: dict) -> dict:
    import h5py
    digest = _Digest()
    string = h5py.string_dtype()
    with h5py.File(path, 'w') as f:
        f.attrs.update(meta)
        for item, res in done:
            g = f.create_group(item['name'])
            g.attrs['source_smiles'] = item['smiles']
            g.attrs['moses_train_row'] = item['key']
            g.attrs['total_charge'] = res['charge']
            g.create_dataset('smiles', data=[res['smiles']], dtype=string)
            g.create_dataset('subset', data=[SPICE_SUBSET], dtype=string)
            data = [('atomic_numbers', res['z'].astype(np.int16), None),
                    ('conformations', (res['coords'] / BOHR_ANGSTROM)
                     .astype(np.float32), 'bohr'),
                    ('dft_total_energy', res['energy'].astype(np.float64),
                     'hartree'),
                    ('dft_total_gradient', res['gradient'].astype(np.float32),
                     'hartree/bohr')]
            digest.add(f'{item["name"]}/smiles', res['smiles'])
            for key, value, unit in data:
                ds = g.create_dataset(key, data=value)
                if unit:
                    ds.attrs['units'] = unit
                digest.add(f'{item["name"]}/{key}', value)
    return dict(file=SPICE_FILE, content_sha256=digest.hexdigest())


def _write_rmd17(folder: str, done: List[Tuple[dict, dict]]) -> dict:
    os.makedirs(folder, exist_ok=True)
    digest = _Digest()
    files = []
    for item, res in done:
        data = OrderedDict([
            ('nuclear_charges', res['z'].astype(np.int64)),
            ('coords', res['coords'].astype(np.float64)),
            ('energies', (res['energy'] * HARTREE_KCAL_MOL)
             .astype(np.float64)),
            ('forces', (-res['gradient'] / BOHR_ANGSTROM * HARTREE_KCAL_MOL)
             .astype(np.float64)),
            ('old_indices', res['steps'].astype(np.int64)),
        ])
        name = f'rmd17_{item["name"]}.npz'
        np.savez(os.path.join(folder, name), **data)
        for key, value in data.items():
            digest.add(f'{name}/{key}', value)
        files.append(os.path.join(RMD17_DIR, name))
    return dict(files=files, content_sha256=digest.hexdigest())


# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
def _versions() -> dict:
    out = {'python': platform.python_version()}
    for name in ('tblite', 'rdkit', 'numpy', 'h5py'):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build(settings: Settings, out: str, progress: bool = True,
          argv: Optional[List[str]] = None) -> dict:
    """Builds the selected domains into :obj:`out`; returns the manifest
    (also written to ``out/manifest.json``)."""
    from tqdm import tqdm
    start = time.monotonic()
    domains = settings.domain_list()
    settings.rmd17_list()
    os.makedirs(out, exist_ok=True)
    versions = _versions()
    # Longest first (MD trajectories), so that no worker idles at the end.
    items: List[dict] = []
    if 'rmd17' in domains:
        items += _rmd17_items(settings)
    if 'spice' in domains:
        items += _spice_items(settings)
    if 'ani1x' in domains:
        items += _ani_items(settings)
    prepared = time.monotonic() - start

    done: Dict[str, List[Tuple[dict, dict]]] = {d: [] for d in domains}
    failures: List[Tuple[str, str, str]] = []
    stats = {d: Counter() for d in domains}
    calls = 0
    results = imap_isolated(_job, items, settings.workers,
                            time_limit=settings.time_limit,
                            initializer=_one_omp_thread)
    if settings.workers <= 1:
        _one_omp_thread()
    bar = tqdm(total=len(items), unit='mol', disable=not progress,
               mininterval=1.0, file=sys.stderr, desc='xTB domains')
    compute_start = time.monotonic()
    for item, res in zip(items, results):
        d = item['domain']
        if isinstance(res, ItemFailure):
            res = dict(failed=res.reason, cpu=0.0)
        stats[d]['cpu'] += res['cpu']
        if 'failed' in res:
            failures.append((d, item['name'], res['failed']))
        else:
            done[d].append((item, res))
            calls += res['calls']
            stats[d]['calls'] += res['calls']
        bar.update(1)
        rate = calls / max(time.monotonic() - compute_start, 1e-9)
        bar.set_postfix(sp_per_s=f'{rate:.0f}', failed=len(failures),
                        refresh=False)
    bar.close()
    computed = time.monotonic() - compute_start

    meta = {'level_of_theory': f'{LEVEL} (tblite {versions["tblite"]})',
            'warning': 'GFN2-xTB values, not DFT: the keys follow the '
                       'published layout only',
            'generator': 'pyg_unimol2 datasets/xtb_domains.py',
            'seed': settings.seed}
    summary: Dict[str, dict] = {}
    if 'ani1x' in domains:
        info = _write_ani1x(os.path.join(out, ANI1X_FILE), done['ani1x'],
                            {**meta, 'source': 'QM9 (qm9pack) geometries'})
        kinds = np.concatenate([r['kind'] for _, r in done['ani1x']]) \
            if done['ani1x'] else np.zeros(0)
        info.update(displaced=int((kinds == 0).sum()),
                    md_snapshots=int((kinds == 1).sum()))
        summary['ani1x'] = info
    if 'spice' in domains:
        info = _write_spice(os.path.join(out, SPICE_FILE), done['spice'],
                            {**meta, 'source': 'MOSES train SMILES'})
        info.update(rdkit_conformers=sum(r['conformers']
                                         for _, r in done['spice']))
        summary['spice'] = info
    if 'rmd17' in domains:
        info = _write_rmd17(os.path.join(out, RMD17_DIR), done['rmd17'])
        info.update(frames_per_molecule={it['name']: len(r['energy'])
                                         for it, r in done['rmd17']},
                    smiles={it['name']: it['smiles']
                            for it, _ in done['rmd17']})
        summary['rmd17'] = info
    for d in domains:
        summary[d].update(
            molecules_tried=sum(it['domain'] == d for it in items),
            molecules=len(done[d]),
            conformations=int(sum(len(r['energy']) for _, r in done[d])),
            failures=sum(f[0] == d for f in failures),
            xtb_singlepoints=int(stats[d]['calls']),
            cpu_seconds=round(stats[d]['cpu'], 1))

    with open(os.path.join(out, FAILURES_FILE), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['domain', 'molecule', 'reason'])
        writer.writerows(failures)
    wall = time.monotonic() - start
    manifest = {
        'format_version': FORMAT_VERSION,
        'command': ' '.join(argv) if argv else None,
        'level_of_theory': LEVEL,
        'units': {
            'ani1x': 'coordinates Angstrom, wb97x_dz.energy Hartree, '
                     'wb97x_dz.forces Hartree/Angstrom',
            'spice': 'conformations Bohr, dft_total_energy Hartree, '
                     'dft_total_gradient Hartree/Bohr',
            'rmd17': 'coords Angstrom, energies kcal/mol, forces '
                     'kcal/mol/Angstrom'},
        'seed': settings.seed,
        'settings': dataclasses.asdict(settings),
        'versions': versions,
        'domains': summary,
        'failures_file': FAILURES_FILE,
        'wall_seconds': round(wall, 1),
        'wall_seconds_inputs': round(prepared, 1),
        'wall_seconds_xtb': round(computed, 1),
        'xtb_singlepoints_per_second': round(calls / max(computed, 1e-9), 1),
    }
    with open(os.path.join(out, MANIFEST_FILE), 'w') as f:
        json.dump(manifest, f, indent=2)
        f.write('\n')
    return manifest


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description='Build the GFN2-xTB energy/force domains (ANI-1x-, '
                    'SPICE- and rMD17-like files).')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--small', action='store_true',
                   help='tiny sizes (< 30 s), for tests')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    for field in dataclasses.fields(Settings):
        flag = '--' + field.name.replace('_', '-')
        if field.type in (bool, 'bool'):
            p.add_argument(flag, type=lambda v: v.lower() in ('1', 'true',
                                                              'yes'),
                           default=None, metavar='BOOL')
        else:
            kind = {'int': int, 'float': float, 'str': str}.get(
                field.type if isinstance(field.type, str)
                else field.type.__name__)
            p.add_argument(flag, type=kind, default=None,
                           help=f'(default: {field.default})')
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault('OMP_NUM_THREADS', '1')  # before tblite loads
    args = _parser().parse_args(argv)
    values = dict(SMALL) if args.small else {}
    for field in dataclasses.fields(Settings):
        value = getattr(args, field.name)
        if value is not None:
            values[field.name] = value
    settings = Settings(**values)
    manifest = build(settings, args.out, progress=not args.quiet,
                     argv=['datasets/xtb_domains.py'] + list(argv))
    lines = [f'{d}: {v["molecules"]}/{v["molecules_tried"]} molecules, '
             f'{v["conformations"]} structures, {v["failures"]} failed'
             for d, v in manifest['domains'].items()]
    print('\n'.join(lines))
    print(f'wall time {manifest["wall_seconds"]} s, '
          f'{manifest["xtb_singlepoints_per_second"]} xTB singlepoints/s; '
          f'files in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
