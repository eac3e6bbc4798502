r"""Which reader a molecule file goes to, from its name: the one dispatch of
``unimol2 predict``, ``unimol2 embed``
(:mod:`pyg_unimol2.train.inputs`) and ``unimol2 finetune --data``
(:func:`~pyg_unimol2.datasets.specs.open_dataset`).

=========== =================================================== ===========
kind        file endings (any case)                             geometry
=========== =================================================== ===========
``sdf``     ``.sdf``, ``.sd``, ``.mol`` (``.gz`` too)           the file's
``xyz``     ``.xyz``, ``.extxyz`` (``.gz`` too)                 the file's
``table``   ``.csv``, ``.tsv`` (``.gz`` too)                    generated
``smiles``  anything else: ``.smi``, ``.txt`` (``.gz`` too)     generated
=========== =================================================== ===========
"""
from pathlib import Path
from typing import Union

from ..data.xyz import XYZ_SUFFIXES
from .sdf import SDF_SUFFIXES

__all__ = ['file_kind', 'TABLE_ENDINGS', 'GEOMETRY_KINDS']

#: Endings of tables read by column (``.txt`` is a SMILES list).
TABLE_ENDINGS = ('.csv', '.tsv', '.csv.gz', '.tsv.gz')
#: Kinds whose molecules come with their own coordinates.
GEOMETRY_KINDS = ('sdf', 'xyz')


def file_kind(path: Union[str, Path]) -> str:
    """``'sdf'``, ``'xyz'``, ``'table'`` or ``'smiles'``: how the molecule
    file :obj:`path` is read (see the module docstring)."""
    name = Path(path).name.lower()
    if name.endswith(SDF_SUFFIXES):
        return 'sdf'
    if name.endswith(XYZ_SUFFIXES):
        return 'xyz'
    if name.endswith(TABLE_ENDINGS):
        return 'table'
    return 'smiles'
