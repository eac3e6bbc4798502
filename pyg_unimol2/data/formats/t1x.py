r"""Transition-1x (``Transition1x.h5``): reaction paths of organic reactions.

Download: Schreiner et al., "Transition1x - a dataset for building
generalizable reactive machine learning potentials", Sci. Data 9, 779
(2022), https://doi.org/10.6084/m9.figshare.19614657 (file
``Transition1x.h5``). Reader of the authors:
https://gitlab.com/matschreiner/Transition1x (``transition1x/dataloader.py``).

Layout (checked against that reader): ``data/<formula>/<reaction>/`` holds
the ``C`` images of the reaction's paths, and its subgroups ``reactant``,
``product`` and ``transition_state`` one configuration each, all with

================================= ============= ===========================
dataset                           shape         unit
================================= ============= ===========================
``atomic_numbers``                ``[n]``
``positions``                     ``[C, n, 3]`` Angstrom
``wB97x_6-31G(d).energy``         ``[C]``       eV
``wB97x_6-31G(d).forces``         ``[C, n, 3]`` eV/Angstrom
================================= ============= ===========================

The groups ``train``, ``val`` and ``test`` hold the same layout (links into
``data``) for the official split. Like the authors' reader, a reaction
yields its reactant, its product, then its path images, all in the record
group ``<split>/<formula>/<reaction>``. All molecules are neutral.
"""
import os
from typing import Iterator, Union

from ...errors import ConfigError, InputError
from ..geometry import GeometryRecord
from .base import label, members, open_hdf5, require, same_conformers

__all__ = ['read_t1x', 'SPLITS']

#: Top-level groups: every reaction, or those of one official split.
SPLITS = ('data', 'train', 'val', 'test')
_ENERGY, _FORCES = 'wB97x_6-31G(d).energy', 'wB97x_6-31G(d).forces'


def read_t1x(path: Union[str, os.PathLike],
             split: str = 'data') -> Iterator[GeometryRecord]:
    r"""Yields every configuration of a Transition-1x file, named
    ``'<file>:<split>/<formula>/<reaction>/<image>'`` (path images),
    ``'.../<reaction>/reactant'`` and ``'.../<reaction>/product'``.

    Args:
        path (path): the ``.h5`` file.
        split (str, optional): one of :data:`SPLITS`.
            (default: :obj:`'data'`, every reaction)

    Raises:
        InputError: a group lacks a dataset of the layout, or its datasets
            disagree on the number of configurations.
    """
    if split not in SPLITS:
        raise ConfigError(f'Transition-1x split must be one of {SPLITS}, '
                          f'got {split!r}')
    with open_hdf5(path, 'Transition-1x') as f:
        root = require(f, split, path)
        for formula, reactions in members(root):
            for reaction, group in members(reactions):
                where = f'{split}/{formula}/{reaction}'
                for end in ('reactant', 'product'):
                    records = list(_configurations(
                        path, f'{where}/{end}', require(group, end, path,
                                                        where)))
                    if len(records) != 1:
                        raise InputError(
                            f"{path}: group '{where}/{end}' holds "
                            f"{len(records)} configurations, not one")
                    yield records[0]._replace(
                        name=f'{label(path)}:{where}/{end}')
                yield from _configurations(path, where, group)


def _configurations(path, where: str, group) -> Iterator[GeometryRecord]:
    z = require(group, 'atomic_numbers', path, where)[()]
    pos = require(group, 'positions', path, where)[()]
    energy = require(group, _ENERGY, path, where)[()]
    forces = require(group, _FORCES, path, where)[()]
    count = same_conformers(path, where, positions=pos, energy=energy,
                            forces=forces)
    for c in range(count):
        yield GeometryRecord(f'{label(path)}:{where}/{c}', z, pos[c],
                             float(energy[c]), forces[c])
