r"""ANI-1x and ANI-1ccx (``ani1x-release.h5``).

Download: the figshare collection of Smith et al., "The ANI-1ccx and ANI-1x
data sets, coupled-cluster and density functional theory properties for
molecules", Sci. Data 7, 134 (2020),
https://doi.org/10.6084/m9.figshare.c.4712477 (file ``ani1x-release.h5``). Reader of the authors:
https://github.com/aiqm/ANI1x_datasets (``dataloader.py``).

Layout (checked against that reader): one group per molecular formula,
with ``C`` conformers of ``n`` atoms each:

========================== ============= ==================================
dataset                    shape         unit
========================== ============= ==================================
``atomic_numbers``         ``[n]``
``coordinates``            ``[C, n, 3]`` Angstrom
``<level>.energy``         ``[C]``       Hartree
``<level>.forces``         ``[C, n, 3]`` Hartree/Angstrom (DFT levels)
========================== ============= ==================================

with levels of theory such as ``wb97x_dz`` (the ANI-1x data, every
conformer), ``wb97x_tz`` and ``ccsd(t)_cbs`` (energies only, the ANI-1ccx
subset). A level that was not computed for a conformer is NaN there: such
conformers fail :func:`~pyg_unimol2.data.geometry.check_geometry` and are
reported and skipped. All molecules are neutral.
"""
import os
from typing import Iterator, Union

import numpy as np

from ..geometry import HARTREE_EV, GeometryRecord
from .base import label, members, open_hdf5, require, same_conformers

__all__ = ['read_ani1x', 'FORCE_LEVELS']

#: Levels of theory with forces (``<level>.forces``).
FORCE_LEVELS = ('wb97x_dz', 'wb97x_tz')


def read_ani1x(path: Union[str, os.PathLike],
               level: str = 'wb97x_dz') -> Iterator[GeometryRecord]:
    r"""Yields every conformer of an ANI-1x file, named
    ``'<file>:<formula>/<conformer>'``, in eV and eV/Angstrom.

    Args:
        path (path): the ``.h5`` file.
        level (str, optional): level of theory of the labels; forces only
            for :data:`FORCE_LEVELS`. (default: :obj:`'wb97x_dz'`)

    Raises:
        InputError: a group lacks a dataset of the layout, or its datasets
            disagree on the number of conformers.
    """
    with open_hdf5(path, 'ANI-1x') as f:
        for formula, group in members(f):
            z = require(group, 'atomic_numbers', path, formula)[()]
            pos = require(group, 'coordinates', path, formula)[()]
            energy = require(group, f'{level}.energy', path, formula)[()]
            arrays = dict(coordinates=pos, energy=energy)
            forces = None
            if level in FORCE_LEVELS:
                forces = require(group, f'{level}.forces', path, formula)[()]
                arrays.update(forces=forces)
                forces = forces.astype(np.float64) * HARTREE_EV
            energy = energy.astype(np.float64) * HARTREE_EV
            for c in range(same_conformers(path, formula, **arrays)):
                yield GeometryRecord(
                    f'{label(path)}:{formula}/{c}', z, pos[c],
                    float(energy[c]), None if forces is None else forces[c])
