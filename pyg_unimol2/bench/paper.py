"""Numbers the Uni-Mol2 paper (arXiv 2406.14969) reports in its Tables 3-6,
to print beside ours.

Every table is entered as printed in the paper's text (the reference copy
``uni-mol2-paper.txt``): per row, the raw cells in the paper's column order,
e.g. ``'0.0038(5e-05)'`` (value and its std over 3 seeds) or ``'0.0169'``
(no std). :data:`PAPER` parses them into :class:`PaperNumber` entries keyed
by ``(table, row, column)``, e.g. ``('table4', 'Uni-Mol2 1.1B', 'alpha')``.
``tests/bench/test_paper.py`` checks every entry against the text.

Units. The paper states only Debye (COMPAS-1D dipole moment); the other
units are inferred. QM9 (Tables 4 and 6) matches the MoleculeNet / raw-file
convention, which is also that of :data:`~pyg_unimol2.datasets.QM9_TARGETS`:
Hartree, bohr^3, cal/(mol K), Debye, bohr^2. COMPAS-1D (Table 5) is read as
eV, the unit of the COMPAS-1D CSV and of
:data:`~pyg_unimol2.datasets.COMPAS1D_TARGETS` (in Hartree the paper's aEA
MAE would be 0.27 eV, three times that of our CPU-minute fingerprint MLP).
So every conversion :attr:`Column.factor` is 1; it stays explicit so that a
table in other units is one factor away. Table 3 is dimensionless.
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..datasets import COMPAS1D_TARGETS, QM9_TARGETS


@dataclass(frozen=True)
class Column:
    """One column of a paper table.

    Args:
        header: its header in the paper's text.
        paper_unit: the unit of the paper's numbers (``''``: dimensionless).
        unit: the unit of our benchmark tables.
        factor: ``value in unit = paper number * factor``.
        targets: our target columns it is printed under (e.g. the paper's
            joint ``HOMO / LUMO / GAP`` under each of ``homo``, ``lumo``,
            ``gap``; none for Table 3).
        subset: the training-set label of a Table 6 column (``'train50'``),
            matched with our ``train50`` rows.
    """
    header: str
    paper_unit: str
    unit: str
    factor: float = 1.0
    targets: Tuple[str, ...] = ()
    subset: Optional[str] = None


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper: ``caption`` (``'Table 4'``, how its caption
    starts in the text), its columns by key (in the paper's order), its rows
    (label -> raw cells, in column order) and a note printed under our
    tables."""
    caption: str
    columns: Dict[str, Column]
    rows: Dict[str, Tuple[str, ...]]
    note: str


@dataclass(frozen=True)
class PaperNumber:
    """One reported number: the cell as printed (:attr:`raw`), its value
    and std (``None`` when the paper gives none) converted to :attr:`unit`,
    and the paper's unit."""
    raw: str
    value: float
    std: Optional[float]
    unit: str
    paper_unit: str

    def __str__(self) -> str:
        """``value (std)`` as our tables print means over seeds."""
        return f'{self.value:g}' + ('' if self.std is None
                                    else f' ({self.std:g})')


def _qm9(header: str, target: str, targets: Sequence[str] = (),
         subset: Optional[str] = None) -> Column:
    unit = QM9_TARGETS[target].unit
    return Column(header, unit, unit, 1.0, tuple(targets) or (target,),
                  subset)


def _compas(header: str, target: str) -> Column:
    unit = COMPAS1D_TARGETS[target].unit
    return Column(header, unit, unit, 1.0, (target,))


_HLG = ('homo', 'lumo', 'gap')

TABLES: Dict[str, PaperTable] = {
    'table3': PaperTable(
        'Table 3',
        {'rmae': Column('RMAE', '', ''), 'mse': Column('MSE', '', ''),
         'r_squared': Column('R-Squared', '', ''),
         'pearson': Column('Pearson Correlation Coefficient', '', '')},
        {'Uni-Mol2 570M': ('0.0169', '2.450e-6', '0.92', '0.85'),
         'Uni-Mol2 1.1B': ('0.0095', '8.458e-5', '0.87', '0.75')},
        'paper Table 3: the scaling law (eq. 11, fitted on 42M-310M) '
        'against the validation loss of the held-out 570M and 1.1B models '
        'over their last 100,000 steps; dimensionless'),
    'table4': PaperTable(
        'Table 4',
        {'homo/lumo/gap': _qm9('HOMO / LUMO / GAP', 'gap', _HLG),
         'alpha': _qm9('alpha', 'alpha'), 'cv': _qm9('C_v', 'cv'),
         'mu': _qm9('mu', 'mu'), 'r2': _qm9('R^2', 'r2'),
         'zpve': _qm9('ZPVE', 'zpve')},
        {'GROVER base': ('0.0079 (3e-04)', '2.365 (0.302)', '1.103 (0.339)',
                         '0.618 (0.002)', '113.01 (4.206)', '0.0035(3e-04)'),
         'GROVER large': ('0.0083 (6e-04)', '2.240 (0.385)',
                          '0.853 (0.186)', '0.623 (0.006)', '85.85 (6.816)',
                          '0.00381(5e-04)'),
         'GEM': ('0.0067(4e-05)', '0.589(0.0042)', '0.237(0.0137)',
                 '0.444(0.0015)', '25.67(0.743)', '0.0011(2e-05)'),
         'Uni-Mol': ('0.0043(2e-05)', '0.363(0.009)', '0.183(0.002)',
                     '0.155(0.0015)', '4.805(0.055)', '0.0011(3e-05)'),
         'Uni-Mol2 84M': ('0.0038(5e-05)', '0.376(0.027)', '0.178(0.012)',
                          '0.105(0.0009)', '4.968(0.235)', '0.0010(1e-04)'),
         'Uni-Mol2 164M': ('0.0036(1e-05)', '0.325(0.004)', '0.157(0.017)',
                           '0.093(0.0006)', '4.935(0.189)',
                           '0.0005(1e-05)'),
         'Uni-Mol2 310M': ('0.0036(1e-05)', '0.315(0.003)', '0.143(0.002)',
                           '0.092(0.0013)', '4.672(0.245)',
                           '0.0005(1e-05)'),
         'Uni-Mol2 570M': ('0.0036(2e-05)', '0.315(0.004)', '0.147(0.0007)',
                           '0.089(0.0015)', '4.523(0.080)',
                           '0.0005(3e-05)'),
         'Uni-Mol2 1.1B': ('0.0035(1e-05)', '0.305(0.003)', '0.144(0.002)',
                           '0.089(0.0004)', '4.265(0.067)',
                           '0.0005(8e-05)')},
        'paper rows: Uni-Mol2 paper Table 4, test MAE, mean (std) over 3 '
        'seeds, scaffold-similarity 80/10/10 split of all of QM9, pretrained '
        'models; units not stated in the paper, read as ours (Hartree, '
        'bohr^3, cal/(mol K), Debye, bohr^2); HOMO, LUMO and gap are one '
        'jointly trained task reported as one number, printed under each of '
        'the three'),
    'table5': PaperTable(
        'Table 5',
        {'aEA': _compas('aEA', 'aEA'), 'aIP': _compas('aIP', 'aIP'),
         'dispersion': _compas('dispersion', 'dispersion'),
         'dipmom': _compas('Dipmom Debye', 'dipmom')},
        {'Uni-Mol': ('0.0099(2e-05)', '0.0083(9e-05)', '0.0092(6e-04)',
                     '0.0198(2e-04)'),
         'Uni-Mol2 84M': ('0.0104(2e-05)', '0.0081(3e-05)', '0.0092(5e-04)',
                          '0.0196(1e-04)'),
         'Uni-Mol2 1.1B': ('0.0103(4e-04)', '0.008(1e-05)', '0.0081(1e-04)',
                           '0.0186(3e-04)'),
         'Uni-Mol2 84M *': ('0.0104(4e-04)', '0.0077(5e-05)',
                            '0.0085(1e-04)', '0.0173(6e-04)'),
         'Uni-Mol2 1.1B *': ('0.0093(4e-05)', '0.0074(9e-05)',
                             '0.0067(2e-04)', '0.0170(2e-04)')},
        'paper rows: Uni-Mol2 paper Table 5, test MAE, mean (std) over 3 '
        'seeds, scaffold-similarity 80/10/10 split, pretrained models; rows '
        'marked * use the atom and bond features; the paper states Debye '
        'for the dipole moment and no unit for aEA, aIP and dispersion, '
        'read as eV (the unit of the COMPAS-1D CSV)'),
    'table6': PaperTable(
        'Table 6',
        {f'train{n}': _qm9(f'train{n}', 'gap', subset=f'train{n}')
         for n in (50, 100, 200)},
        {'Uni-Mol2 84M': ('0.0062(8.1e-05)', '0.0053(1.0e-06)',
                          '0.0046(1.0e-06)'),
         'Uni-Mol2 164M': ('0.0058(3.7e-05)', '0.0050(1.4e-05)',
                           '0.0044(6.9e-05)'),
         'Uni-Mol2 310M': ('0.0056(4.7e-05)', '0.0049(0.4e-06)',
                           '0.0044(4.0e-05)'),
         'Uni-Mol2 570M': ('0.0057(4.2e-05)', '0.0048(1.8e-05)',
                           '0.0044(8.1e-06)'),
         'Uni-Mol2 1.1B': ('0.0056(1.8e-05)', '0.0048(3.5e-05)',
                           '0.0043(4.7e-05)')},
        'paper rows: Uni-Mol2 paper Table 6, test MAE, mean (std), '
        'pretrained models; captioned "about HOMO-LUMO GAP" (printed under '
        'gap; its text says the models predict HOMO, LUMO and gap), unit '
        'not stated, read as Hartree; the paper defines trainN as N% of the '
        'QM9 test-set size (section 5.3: "sampling at 50%, 100%, and 200% '
        'of the test set size", about 6,500 to 26,000 molecules), though it '
        'also speaks of "50 to 200 instances"; our trainN rows are N '
        'molecules'),
}

_CELL = re.compile(r'^\s*([-+0-9.eE]+)\s*(?:\(\s*([-+0-9.eE]+)\s*\))?\s*$')


def parse_cell(raw: str) -> Tuple[float, Optional[float]]:
    """The value and std (``None`` when absent) of a cell as printed in the
    paper, ``'0.0038(5e-05)'``, ``'0.0079 (3e-04)'`` or ``'0.0169'``."""
    match = _CELL.match(raw)
    if match is None:
        raise ValueError(f'not a paper cell: {raw!r}')
    value, std = match.groups()
    return float(value), None if std is None else float(std)


def _number(raw: str, column: Column) -> PaperNumber:
    value, std = parse_cell(raw)
    return PaperNumber(raw, value * column.factor,
                       None if std is None else std * column.factor,
                       column.unit, column.paper_unit)


#: Every reported number by ``(table, row, column key)``.
PAPER: Dict[Tuple[str, str, str], PaperNumber] = {
    (name, row, key): _number(raw, column)
    for name, table in TABLES.items()
    for row, cells in table.rows.items()
    for (key, column), raw in zip(table.columns.items(), cells, strict=True)}


def paper_value(table: str, row: str, column: str) -> Optional[PaperNumber]:
    """The reported number, or :obj:`None` when the paper has none."""
    return PAPER.get((table, row, column))


def paper_cells(table: str, row: str, targets: Sequence[str],
                subset: Optional[str] = None) -> List[Optional[PaperNumber]]:
    """The numbers of a paper row to print under our target columns
    :obj:`targets` (:obj:`None` where the paper has none), for a Table 6
    row the column of training set :obj:`subset` (``'train50'``)."""
    columns = TABLES[table].columns
    found = {target: key for key, column in columns.items()
             if column.subset == subset for target in column.targets}
    return [paper_value(table, row, found[t]) if t in found else None
            for t in targets]
