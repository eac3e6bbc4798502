"""Numbers the Uni-Mol2 paper (arXiv 2406.14969) reports, to print beside
ours.

Only numbers checked against the paper belong here; a missing entry prints
as ``n/a``. The tables below are still empty: the paper's text was not
available when this harness was written, and no number is filled in from
memory. Keys: ``(table, row, column)``, e.g.
``('table4', 'Uni-Mol2 1.1B', 'gap')``; values in the units of
:data:`~pyg_unimol2.datasets.QM9_TARGETS` /
:data:`~pyg_unimol2.datasets.COMPAS1D_TARGETS`.
"""
from typing import Dict, Optional, Tuple

PAPER: Dict[Tuple[str, str, str], float] = {}

#: Rows of each table that are printed (the model sizes of the paper).
PAPER_ROWS = {
    'table4': ('Uni-Mol2 84M', 'Uni-Mol2 1.1B'),
    'table5': ('Uni-Mol2 84M', 'Uni-Mol2 1.1B'),
    'table6': ('Uni-Mol2 84M', 'Uni-Mol2 1.1B'),
}


def paper_value(table: str, row: str, column: str) -> Optional[float]:
    """The reported number, or :obj:`None` when it is not recorded."""
    return PAPER.get((table, row, column))
