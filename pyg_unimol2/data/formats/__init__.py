r"""Readers of public energy/force datasets, each yielding
:class:`~pyg_unimol2.data.geometry.GeometryRecord` objects in Angstrom, eV
and eV/Angstrom whatever the units of its file.

============ ======================================== =====================
format       files                                    module
============ ======================================== =====================
``ani1x``    ``ani1x-release.h5`` (ANI-1x, ANI-1ccx)  :mod:`.ani1x`
``t1x``      ``Transition1x.h5``                      :mod:`.t1x`
``spice``    ``SPICE-<version>.hdf5``                 :mod:`.spice`
``rmd17``    ``rmd17_<molecule>.npz``                 :mod:`.rmd17`
``md22``     ``md22_<name>.npz`` (any sGDML ``.npz``) :mod:`.md22`
``ase``      ASE ``.db``, extended XYZ ``.extxyz``,   :mod:`.ase_io`
             ``.xyz``
============ ======================================== =====================

Each module's docstring gives the official download location and the
layout, checked against the dataset's own reader or writer. A file that
lacks a key of its format raises one
:class:`~pyg_unimol2.errors.InputError` naming the file and the key; bad
records (mismatched lengths, NaN labels, unknown elements, a cell) are
yielded as they are, for :func:`~pyg_unimol2.data.geometry.check_geometry`
to reject with the record's name.
"""
import inspect
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

from ...errors import ConfigError, InputError
from ..geometry import GeometryRecord
from .ani1x import read_ani1x
from .ase_io import ASE_SUFFIXES, read_ase
from .md22 import read_md22
from .rmd17 import read_rmd17
from .spice import read_spice
from .t1x import read_t1x

__all__ = ['READERS', 'detect_format', 'reader_options', 'read_geometries',
           'read_ani1x',
           'read_t1x', 'read_spice', 'read_rmd17', 'read_md22', 'read_ase']

#: The reader of each format name.
READERS: Dict[str, Callable[..., Iterator[GeometryRecord]]] = dict(
    ani1x=read_ani1x, t1x=read_t1x, spice=read_spice, rmd17=read_rmd17,
    md22=read_md22, ase=read_ase)

PathLike = Union[str, os.PathLike]


def detect_format(path: PathLike) -> str:
    r"""The format of :obj:`path` from its name: ``.db``, ``.extxyz`` and
    ``.xyz`` are ``'ase'``; ``.npz`` is ``'rmd17'`` when the name starts
    with ``rmd17``, else ``'md22'`` (sGDML); ``.h5``/``.hdf5`` is
    ``'ani1x'``, ``'t1x'`` or ``'spice'`` when the name contains ``ani1x``,
    ``transition1x`` or ``spice`` (any case).

    Raises:
        InputError: the name does not tell.
    """
    name, suffix = Path(path).name.lower(), Path(path).suffix.lower()
    if suffix in ASE_SUFFIXES:
        return 'ase'
    if suffix == '.npz':
        return 'rmd17' if name.startswith('rmd17') else 'md22'
    if suffix in ('.h5', '.hdf5'):
        for key, fmt in (('ani1x', 'ani1x'), ('transition1x', 't1x'),
                         ('spice', 'spice')):
            if key in name:
                return fmt
    raise InputError(f'{path}: cannot tell its format from the name; give '
                     f'one of {", ".join(READERS)} (--format)')


def reader_options(format: str) -> Tuple[str, ...]:
    """The keyword options of the reader of :obj:`format`.

    Raises:
        ConfigError: an unknown format.
    """
    reader = READERS.get(format)
    if reader is None:
        raise ConfigError(f'unknown structure format {format!r} (use one of '
                          f'{", ".join(READERS)})')
    return tuple(inspect.signature(reader).parameters)[1:]


def read_geometries(path: PathLike, format: Optional[str] = None,
                    **options: Any) -> Iterator[GeometryRecord]:
    r"""The records of :obj:`path` read as :obj:`format` (default: from its
    name, :func:`detect_format`), with the reader's keyword
    :obj:`options` (e.g. ``level=`` of ANI-1x, ``split=`` of
    Transition-1x).

    Raises:
        ConfigError: an unknown format, or an option its reader does not
            take.
    """
    format = format or detect_format(path)
    known = reader_options(format)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f'format {format} takes no option '
                          f'{", ".join(unknown)} (it takes: '
                          f'{", ".join(known) or "none"})')
    return READERS[format](path, **options)
