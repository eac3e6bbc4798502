"""Every number of :mod:`pyg_unimol2.bench.paper` against the text of the
Uni-Mol2 paper (``shared/reference/papers/uni-mol2-paper.txt``): each table
is read from the block under its caption, independently of the module's
parser."""
import re
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import SHARED

from pyg_unimol2.bench.paper import (PAPER, TABLES, paper_cells, paper_value,
                                     parse_cell)
from pyg_unimol2.datasets import COMPAS1D_TARGETS, QM9_TARGETS

PAPER_TEXT = SHARED / 'reference' / 'papers' / 'uni-mol2-paper.txt'
_NUM = r'(\d[\d.]*(?:e[-+]?\d+)?)'
NUMBER = re.compile(_NUM + r'\s*(?:\(' + _NUM + r'\))?')


def _block(lines: List[str], caption: str) -> List[List[str]]:
    """The tab-separated lines (header first) of the table whose caption
    line starts with :obj:`caption`."""
    start = next(i for i, line in enumerate(lines)
                 if line.startswith(caption + ':'))
    block = []
    for line in lines[start + 1:]:
        if line.strip():
            block.append(line.split('\t'))
        elif block:
            break
    return block


def _label(cell: str) -> str:
    """A row label without the text's markup: ``<i>GROVER</i> _{base}`` ->
    ``GROVER base``."""
    return ' '.join(re.sub(r'</?i>|_\{|\}', '', cell).split())


@pytest.fixture(scope='module')
def text_tables() -> Dict[str, Dict[str, List[str]]]:
    """``{table: {row label or 'Model': cells}}`` read from the paper."""
    if not PAPER_TEXT.is_file():
        pytest.fail(f'paper text not found at {PAPER_TEXT}')
    lines = Path(PAPER_TEXT).read_text().splitlines()
    return {name: {_label(cells[0]): cells[1:]
                   for cells in _block(lines, table.caption)}
            for name, table in TABLES.items()}


@pytest.mark.parametrize('name', sorted(TABLES))
def test_columns_and_rows_are_those_of_the_paper(text_tables, name):
    table, text = TABLES[name], text_tables[name]
    assert text['Model'] == [c.header for c in table.columns.values()]
    assert sorted(table.rows) == sorted(set(text) - {'Model'})


def test_every_entry_is_the_papers_cell_times_its_factor(text_tables):
    assert len(PAPER) == 2 * 4 + 9 * 6 + 5 * 4 + 5 * 3
    for (name, row, key), number in PAPER.items():
        column = TABLES[name].columns[key]
        cell = text_tables[name][row][list(TABLES[name].columns).index(key)]
        assert number.raw == cell, (name, row, key)
        value, std = NUMBER.fullmatch(cell).groups()
        assert number.value == pytest.approx(float(value) * column.factor)
        if std is None:
            assert number.std is None
        else:
            assert number.std == pytest.approx(float(std) * column.factor)
        assert (number.unit, number.paper_unit) == (column.unit,
                                                    column.paper_unit)


def test_units_are_those_of_the_benchmark_tables():
    units = {'table4': QM9_TARGETS, 'table6': QM9_TARGETS,
             'table5': COMPAS1D_TARGETS}
    for name, targets in units.items():
        for column in TABLES[name].columns.values():
            assert column.targets
            assert {targets[t].unit for t in column.targets} == {column.unit}
            assert column.factor == 1.0 and column.paper_unit == column.unit
    assert all(c.unit == '' and not c.targets
               for c in TABLES['table3'].columns.values())


def test_lookup_by_paper_column_and_by_our_targets():
    assert paper_value('table3', 'Uni-Mol2 570M', 'mse').value == 2.45e-6
    assert str(paper_value('table3', 'Uni-Mol2 1.1B', 'rmae')) == '0.0095'
    assert paper_value('table4', 'Uni-Mol2 2B', 'alpha') is None
    cells = paper_cells('table4', 'Uni-Mol2 1.1B', ['homo', 'gap', 'alpha',
                                                   'u0'])
    assert [str(c) for c in cells] == ['0.0035 (1e-05)', '0.0035 (1e-05)',
                                       '0.305 (0.003)', 'None']
    assert [str(c) for c in paper_cells('table5', 'Uni-Mol2 84M *',
                                        ['dipmom'])] == ['0.0173 (0.0006)']
    assert [str(c) for c in paper_cells('table6', 'Uni-Mol2 84M',
                                        ['homo', 'gap'], 'train200')] == \
        ['None', '0.0046 (1e-06)']
    assert paper_cells('table6', 'Uni-Mol2 84M', ['gap']) == [None]


def test_parse_cell_rejects_what_is_not_a_number():
    assert parse_cell('0.0079 (3e-04)') == (0.0079, 3e-4)
    assert parse_cell('2.450e-6') == (2.45e-6, None)
    with pytest.raises(ValueError, match='not a paper cell'):
        parse_cell('0.0079 / 3e-04')
