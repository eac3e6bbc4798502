r"""Molecules given as atoms and coordinates, with energies and forces.

Energy/force datasets (ANI-1x, Transition-1x, SPICE, rMD17, MD22, ASE
databases, the xTB domains of ``datasets/xtb_domains.py``) give each
structure as atomic numbers and Cartesian coordinates with all hydrogens,
plus labels. Every reader of :mod:`pyg_unimol2.data.formats` yields
:class:`GeometryRecord` objects in the units of this module, whatever the
units of its file, and :func:`check_geometry` is the one place where a record
is validated; :func:`geometry_to_data` makes the model input.

Units: coordinates in Angstrom, energies in eV, forces in eV/Angstrom,
total charge in elementary charges.

========== ========= ======= ============================================
field      shape     dtype   meaning
========== ========= ======= ============================================
``name``   str               identifier (file and record), in messages
``z``      ``[n]``   int64   atomic numbers, hydrogens included
``pos``    ``[n, 3]`` float64 coordinates
``energy`` scalar    float   total energy, or :obj:`None`
``forces`` ``[n, 3]`` float64 forces, or :obj:`None`
``charge`` int               total charge (``0`` if the data has none)
========== ========= ======= ============================================

Periodic systems (a unit cell: OC20, OC22, materials) are out of scope for
the Uni-Mol2 backbone, which has no periodic images: :func:`check_geometry`
rejects a record with a cell.
"""
import math
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch_geometric.data import Data

from .encoding import MAX_ATOMIC_NUM
from .errors import FeaturizationError

__all__ = ['GeometryRecord', 'GeometryError', 'check_geometry',
           'geometry_to_data', 'HARTREE_EV', 'BOHR_ANGSTROM', 'KCAL_MOL_EV',
           'MAX_GEOMETRY_ATOMS']

#: eV per Hartree (CODATA 2018).
HARTREE_EV = 27.211386245988
#: Angstrom per Bohr (CODATA 2018).
BOHR_ANGSTROM = 0.529177210903
#: eV per kcal/mol.
KCAL_MOL_EV = 0.0433641043
#: Default atom limit of geometry inputs (hydrogens included). The pair
#: track holds ``(n + 1)^2 * pair_dim`` activations per layer and molecule:
#: for MD22's largest system (370 atoms) and ``pair_dim = 128`` that is
#: 17.6M values, 70 MB in fp32 per layer, so raise it knowingly.
MAX_GEOMETRY_ATOMS = 256


class GeometryRecord(NamedTuple):
    """One structure with its labels (units: see the module docstring)."""
    name: str
    z: np.ndarray
    pos: np.ndarray
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    charge: int = 0
    cell: Optional[np.ndarray] = None  #: a unit cell: rejected


class GeometryError(FeaturizationError):
    """A structure whose arrays or labels cannot be used."""

    reason = 'bad structure'


def check_geometry(record: GeometryRecord,
                   max_atoms: int = MAX_GEOMETRY_ATOMS) -> GeometryRecord:
    r"""Validates :obj:`record` and returns it with arrays of the documented
    dtypes.

    Raises:
        GeometryError: naming the record, when the shapes of ``z``,
            ``pos`` and ``forces`` do not match, an atomic number is outside
            ``1..118``, a coordinate, the energy or a force is NaN or
            infinite, it has more than :obj:`max_atoms` atoms, or it has a
            unit cell (periodic systems are out of scope).
    """
    name = record.name
    if record.cell is not None and np.any(np.asarray(record.cell) != 0):
        raise GeometryError(name, 'has a unit cell: periodic systems are not '
                            'supported by the Uni-Mol2 backbone')
    z = np.asarray(record.z)
    pos = np.asarray(record.pos, dtype=np.float64)
    if z.ndim != 1 or z.shape[0] == 0 or pos.shape != (z.shape[0], 3):
        raise GeometryError(name, f'atomic numbers {list(z.shape)} and '
                            f'coordinates {list(pos.shape)} do not match '
                            f'([n] and [n, 3])')
    if not np.issubdtype(z.dtype, np.integer):
        if not np.all(np.mod(z, 1) == 0):
            raise GeometryError(name, 'atomic numbers are not integers')
    z = z.astype(np.int64)
    bad = sorted({int(v) for v in z if not 1 <= v <= MAX_ATOMIC_NUM})
    if bad:
        raise GeometryError(name, f'atomic numbers {bad} outside '
                            f'1..{MAX_ATOMIC_NUM}')
    if z.shape[0] > max_atoms:
        raise GeometryError(name, f'{z.shape[0]} atoms > max_atoms='
                            f'{max_atoms}')
    if not np.isfinite(pos).all():
        raise GeometryError(name, 'non-finite coordinates')
    energy = record.energy
    if energy is not None:
        energy = float(energy)
        if not math.isfinite(energy):
            raise GeometryError(name, f'non-finite energy {energy}')
    forces = record.forces
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != pos.shape:
            raise GeometryError(name, f'forces {list(forces.shape)} do not '
                                f'match coordinates {list(pos.shape)}')
        if not np.isfinite(forces).all():
            raise GeometryError(name, 'non-finite forces')
    return GeometryRecord(name, z, pos, energy, forces, int(record.charge),
                          None)


def geometry_to_data(record: GeometryRecord, *, perceive_bonds: bool = False,
                     max_atoms: int = MAX_GEOMETRY_ATOMS) -> Data:
    r"""The model input of a checked record: all atoms kept, graph features
    dropped (:func:`~pyg_unimol2.data.featurize.from_atoms`) or, with
    :obj:`perceive_bonds`, perceived from the coordinates and the total
    charge (:func:`~pyg_unimol2.data.xyz.from_xyz`), plus ``energy``
    ``[1]`` (float64, eV, NaN if unknown), ``forces`` ``[n, 3]`` (float32,
    eV/Angstrom, NaN if unknown) and ``charge`` ``[1]`` (int64).

    Raises:
        GeometryError: see :func:`check_geometry`; bond perception errors
            are :class:`~pyg_unimol2.data.errors.FeaturizationError` too.
    """
    from .featurize import from_atoms
    from .xyz import from_xyz

    record = check_geometry(record, max_atoms)
    if perceive_bonds:
        data = from_xyz(record.z, record.pos, charge=record.charge,
                        name=record.name, remove_hs=False,
                        max_atoms=max_atoms)
    else:
        data = from_atoms(record.z, record.pos, name=record.name,
                          remove_hs=False)
    n = record.z.shape[0]
    data.energy = torch.tensor([math.nan if record.energy is None
                                else record.energy], dtype=torch.float64)
    forces = np.full((n, 3), np.nan) if record.forces is None \
        else record.forces
    data.forces = torch.from_numpy(np.asarray(forces, np.float32))
    data.charge = torch.tensor([record.charge], dtype=torch.long)
    return data
