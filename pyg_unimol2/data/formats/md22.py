r"""MD22 and other sGDML datasets (``md22_<name>.npz``): molecular dynamics of
large molecules and complexes.

Download: Chmiela et al., "Accurate global machine learning force fields
for molecules with hundreds of atoms", Sci. Adv. 9, eadf0873 (2023);
http://www.sgdml.org/#datasets (files
``http://quantum-machine.org/gdml/data/npz/md22_<name>.npz``). Writer of the
format: the sGDML package, https://github.com/stefanch/sGDML
(``scripts/sgdml_dataset_via_ase.py``).

Layout (checked against that writer):

=========== ================= =============================================
array       shape             content
=========== ================= =============================================
``z``       ``[n]``           atomic numbers
``R``       ``[C, n, 3]``     coordinates, in ``r_unit``
``E``       ``[C, 1]``        energies, in ``e_unit``
``F``       ``[C, n, 3]``     forces, in ``e_unit / r_unit``
``r_unit``  string            e.g. ``'Ang'`` (default) or ``'au'``
``e_unit``  string            e.g. ``'kcal/mol'`` (default) or ``'eV'``
``lattice`` ``[3, 3]``        a periodic cell, if any (rejected)
``name``,   strings           the dataset and its level of theory
``theory``
=========== ================= =============================================

MD22's molecules are neutral.
"""
import os
from typing import Dict, Iterator, Union

import numpy as np

from ...errors import InputError
from ..geometry import (BOHR_ANGSTROM, HARTREE_EV, KCAL_MOL_EV,
                        GeometryRecord)
from .base import label, load_npz, require, same_conformers

__all__ = ['read_md22', 'ENERGY_UNITS', 'LENGTH_UNITS']

#: eV per unit of the ``e_unit`` strings read (lower case).
ENERGY_UNITS: Dict[str, float] = {
    'kcal/mol': KCAL_MOL_EV, 'kj/mol': KCAL_MOL_EV / 4.184, 'ev': 1.0,
    'au': HARTREE_EV, 'hartree': HARTREE_EV, 'ha': HARTREE_EV}
#: Angstrom per unit of the ``r_unit`` strings read (lower case).
LENGTH_UNITS: Dict[str, float] = {
    'ang': 1.0, 'angstrom': 1.0, 'a': 1.0, 'au': BOHR_ANGSTROM,
    'bohr': BOHR_ANGSTROM, 'nm': 10.0}


def read_md22(path: Union[str, os.PathLike]) -> Iterator[GeometryRecord]:
    r"""Yields every frame of an sGDML file, named ``'<file>:<frame>'``, in
    Angstrom, eV and eV/Angstrom (converted from ``r_unit`` and
    ``e_unit``).

    Raises:
        InputError: the file lacks an array of the layout, its arrays
            disagree on the number of frames, or a unit is unknown.
    """
    with load_npz(path, 'sGDML (MD22)') as npz:
        z = require(npz, 'z', path)
        pos = require(npz, 'R', path)
        energy = require(npz, 'E', path).reshape(-1)
        forces = require(npz, 'F', path)
        to_ev = _unit(npz, 'e_unit', 'kcal/mol', ENERGY_UNITS, path)
        to_angstrom = _unit(npz, 'r_unit', 'Ang', LENGTH_UNITS, path)
        cell = npz['lattice'] if 'lattice' in npz else None
    count = same_conformers(path, '', R=pos, E=energy, F=forces)
    pos = pos.astype(np.float64) * to_angstrom
    energy = energy.astype(np.float64) * to_ev
    forces = forces.astype(np.float64) * (to_ev / to_angstrom)
    for c in range(count):
        yield GeometryRecord(f'{label(path)}:{c}', z, pos[c],
                             float(energy[c]), forces[c], 0, cell)


def _unit(npz, key: str, default: str, units: Dict[str, float],
          path) -> float:
    value = str(npz[key]) if key in npz else default
    factor = units.get(value.strip().lower())
    if factor is None:
        raise InputError(f'{path}: unknown {key} {value!r} (known: '
                         f'{", ".join(sorted(units))})')
    return factor
