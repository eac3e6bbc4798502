r"""Revised MD17 (``rmd17_<molecule>.npz``): molecular dynamics of ten small
molecules, recomputed at the PBE/def2-SVP level.

Download: Christensen and von Lilienfeld, "On the role of gradients for
machine learning of molecular energies and forces", Mach. Learn.: Sci.
Technol. 1, 045018 (2020); https://doi.org/10.6084/m9.figshare.12672038
(``rmd17.tar.bz2``, also on Materials Cloud,
https://archive.materialscloud.org/record/466), ``npz_data/`` inside.

Layout (the four arrays read checked against the readers of PyG's ``MD17``
and of ColabFit; the ``old_*`` arrays, not read, as described with the
data):

=================== ============= =========================================
array               shape         unit
=================== ============= =========================================
``nuclear_charges`` ``[n]``
``coords``          ``[C, n, 3]`` Angstrom
``energies``        ``[C]``       kcal/mol
``forces``          ``[C, n, 3]`` kcal/mol/Angstrom
``old_indices``     ``[C]``       index in the original MD17 trajectory
``old_energies``    ``[C]``       original MD17 labels (not read)
``old_forces``      ``[C, n, 3]``
=================== ============= =========================================

All molecules are neutral.
"""
import os
from typing import Iterator, Union

import numpy as np

from ..geometry import KCAL_MOL_EV, GeometryRecord
from .base import label, load_npz, require, same_conformers

__all__ = ['read_rmd17']


def read_rmd17(path: Union[str, os.PathLike]) -> Iterator[GeometryRecord]:
    r"""Yields every frame of an rMD17 file, named ``'<file>:<frame>'``, in
    eV and eV/Angstrom.

    Raises:
        InputError: the file lacks an array of the layout, or its arrays
            disagree on the number of frames.
    """
    with load_npz(path, 'rMD17') as npz:
        z = require(npz, 'nuclear_charges', path)
        pos = require(npz, 'coords', path)
        energy = require(npz, 'energies', path)
        forces = require(npz, 'forces', path)
    count = same_conformers(path, '', coords=pos, energies=energy,
                            forces=forces)
    energy = energy.astype(np.float64) * KCAL_MOL_EV
    forces = forces.astype(np.float64) * KCAL_MOL_EV
    for c in range(count):
        yield GeometryRecord(f'{label(path)}:{c}', z, pos[c],
                             float(energy[c]), forces[c])
