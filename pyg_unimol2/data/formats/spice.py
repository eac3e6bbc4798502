r"""SPICE (``SPICE-<version>.hdf5``): small molecules, dimers, dipeptides and
solvated amino acids at the wB97M-D3BJ/def2-TZVPPD level.

Download: Eastman et al., "SPICE, A Dataset of Drug-like Molecules and
Peptides for Training Machine Learning Potentials", Sci. Data 10, 11
(2023); releases on Zenodo, https://doi.org/10.5281/zenodo.10975225 (e.g.
``SPICE-2.0.1.hdf5``). Writer of the file and its documentation:
https://github.com/openmm/spice-dataset (``downloader/downloader.py``,
``downloader/README.md``).

Layout (checked against that writer): one group per molecule or cluster,
with ``C`` conformations of ``n`` atoms each, in atomic units:

========================== ============= ==================================
dataset                    shape         unit
========================== ============= ==================================
``atomic_numbers``         ``[n]``
``conformations``          ``[C, n, 3]`` Bohr
``dft_total_energy``       ``[C]``       Hartree
``dft_total_gradient``     ``[C, n, 3]`` Hartree/Bohr (forces = -gradient)
``smiles``                 ``[1]``       mapped SMILES with hydrogens
``subset``                 ``[1]``       name of the subset
========================== ============= ==================================

The total charge is the sum of the formal charges of the SMILES.
"""
import os
from typing import Iterator, Union

import numpy as np
from rdkit import Chem

from ...errors import InputError
from ..geometry import BOHR_ANGSTROM, HARTREE_EV, GeometryRecord
from .base import label, members, open_hdf5, require, same_conformers

__all__ = ['read_spice']


def read_spice(path: Union[str, os.PathLike]) -> Iterator[GeometryRecord]:
    r"""Yields every conformation of a SPICE file, named
    ``'<file>:<group>/<conformation>'``, in Angstrom, eV and eV/Angstrom.

    Raises:
        InputError: a group lacks a dataset of the layout, its datasets
            disagree on the number of conformations, or its SMILES cannot
            be parsed (it gives the total charge).
    """
    with open_hdf5(path, 'SPICE') as f:
        for name, group in members(f):
            z = require(group, 'atomic_numbers', path, name)[()]
            pos = require(group, 'conformations', path, name)[()]
            energy = require(group, 'dft_total_energy', path, name)[()]
            gradient = require(group, 'dft_total_gradient', path, name)[()]
            smiles = require(group, 'smiles', path, name).asstr()[0]
            count = same_conformers(path, name, conformations=pos,
                                    dft_total_energy=energy,
                                    dft_total_gradient=gradient)
            charge = _total_charge(smiles, path, name)
            pos = pos.astype(np.float64) * BOHR_ANGSTROM
            energy = energy.astype(np.float64) * HARTREE_EV
            forces = gradient.astype(np.float64) * (-HARTREE_EV /
                                                    BOHR_ANGSTROM)
            for c in range(count):
                yield GeometryRecord(f'{label(path)}:{name}/{c}', z, pos[c],
                                     float(energy[c]), forces[c], charge)


def _total_charge(smiles: str, path, group: str) -> int:
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        raise InputError(f"{path}: group '{group}': its smiles {smiles!r} "
                         f"cannot be parsed (it gives the total charge)")
    return sum(atom.GetFormalCharge() for atom in mol.GetAtoms())
