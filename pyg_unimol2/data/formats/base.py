"""What the readers of :mod:`pyg_unimol2.data.formats` share: opening a file
and finding a key of its format, with one
:class:`~pyg_unimol2.errors.InputError` naming the file and the key when it
is not there."""
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator, Tuple, Union

import h5py
import numpy as np

from ...errors import InputError

__all__ = ['open_hdf5', 'members', 'load_npz', 'require', 'same_conformers',
           'label']

PathLike = Union[str, os.PathLike]


def label(path: PathLike) -> str:
    """The file part of record names: the file name of :obj:`path`."""
    return Path(path).name


def open_hdf5(path: PathLike, what: str) -> h5py.File:
    """:obj:`path` opened read-only as an HDF5 file of format :obj:`what`.

    Raises:
        InputError: it is not an HDF5 file.
    """
    try:
        return h5py.File(path, 'r')
    except OSError as e:
        raise InputError(f'{path}: not an HDF5 file ({e}); give a {what} '
                         f'file') from None


def members(group: h5py.Group) -> Iterator[Tuple[str, Any]]:
    """``(name, member)`` of every member of :obj:`group`, in name order.

    Unlike ``group.items()``, this does not hold h5py's global lock while
    the caller has the item: a reader suspended between records must not
    block the thread that writes store shards meanwhile.
    """
    for name in list(group):
        yield name, group[name]


def load_npz(path: PathLike, what: str) -> np.lib.npyio.NpzFile:
    """:obj:`path` opened as a NumPy ``.npz`` archive of format
    :obj:`what` (arrays are read on access, no pickles).

    Raises:
        InputError: it is not an ``.npz`` archive.
    """
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f'{path}: not a NumPy .npz file ({e}); give a '
                         f'{what} file') from None


def require(container: Any, key: str, path: PathLike, where: str = '') -> Any:
    """``container[key]`` (an HDF5 group or dataset, or an ``.npz`` array).

    Raises:
        InputError: naming :obj:`path`, the group :obj:`where` and
            :obj:`key`, when :obj:`container` has no :obj:`key`.
    """
    if key not in container:
        inside = f" in group '{where}'" if where else ''
        raise InputError(f"{path}: no '{key}'{inside}; is the file in the "
                         f"format given (or guessed from its name)?")
    return container[key]


def same_conformers(path: PathLike, where: str, **arrays: np.ndarray) -> int:
    """The number of conformers ``C`` (first dimension) that all
    :obj:`arrays` share.

    Raises:
        InputError: naming the file, the group and the arrays, when their
            first dimensions differ.
    """
    counts = {key: (a.shape[0] if a.ndim else 0) for key, a in arrays.items()}
    if len(set(counts.values())) != 1:
        inside = f" group '{where}':" if where else ''
        listed = ', '.join(f"'{k}' {c}" for k, c in counts.items())
        raise InputError(f'{path}:{inside} the conformer counts of its '
                         f'arrays differ ({listed})')
    return next(iter(counts.values()))
