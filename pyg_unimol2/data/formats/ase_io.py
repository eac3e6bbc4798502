r"""ASE databases (``.db``) and extended XYZ files (``.extxyz``, ``.xyz``),
read with the Atomic Simulation Environment (``pip install ase``,
https://wiki.fysik.dtu.dk/ase/; imported here only, when such a file is
read).

Labels come from the calculator attached to each structure (ASE keeps
``energy`` in eV and ``forces`` in eV/Angstrom), else from the ``energy``
info key and the ``forces`` per-atom array of an extended XYZ frame; a
structure without them has none (NaN in a store). The total charge is the
``charge`` key (info of an XYZ frame, key-value pair of a database row),
else the sum of the initial charges (``0`` without any). A structure with a
unit cell is rejected by :func:`~pyg_unimol2.data.geometry.check_geometry`
(periodic systems are out of scope).
"""
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterator, Union

from ...errors import ConfigError, InputError
from ..geometry import GeometryRecord
from .base import label

__all__ = ['read_ase', 'ASE_SUFFIXES']

#: File name suffixes read with ASE.
ASE_SUFFIXES = ('.db', '.extxyz', '.xyz')


def read_ase(path: Union[str, os.PathLike]) -> Iterator[GeometryRecord]:
    r"""Yields every structure of an ASE database (named
    ``'<file>:<row id>'``) or extended XYZ file (``'<file>:<frame>'``).

    Raises:
        ConfigError: the ``ase`` package is not installed.
        InputError: the file cannot be read as its kind, naming it and the
            structure reached.
    """
    try:
        import ase.db
        import ase.io
    except ImportError:
        raise ConfigError('reading ASE databases and extended XYZ files '
                          'needs the ase package: pip install ase') from None
    path = Path(path)
    name, at = label(path), 0
    try:
        if path.suffix.lower() == '.db':
            for row in ase.db.connect(path).select():
                at = row.id
                yield _record(row.toatoms(), row.key_value_pairs,
                              f'{name}:{row.id}')
        else:
            for at, atoms in enumerate(ase.io.iread(path, index=':',
                                                    format='extxyz')):
                yield _record(atoms, atoms.info, f'{name}:{at}')
    except (sqlite3.DatabaseError, ValueError, KeyError, IndexError) as e:
        raise InputError(f'{path}: unreadable at structure {at} '
                         f'({type(e).__name__}: {e}); give an ASE .db or '
                         f'an extended XYZ file') from None


def _record(atoms: Any, info: Dict[str, Any], name: str) -> GeometryRecord:
    results = atoms.calc.results if atoms.calc is not None else {}
    energy = results.get('energy', info.get('energy'))
    forces = results.get('forces', atoms.arrays.get('forces'))
    charge = info.get('charge', atoms.get_initial_charges().sum())
    cell = atoms.cell.array
    return GeometryRecord(name, atoms.numbers.copy(), atoms.positions.copy(),
                          energy, forces, int(round(float(charge))),
                          cell.copy() if cell.any() else None)
