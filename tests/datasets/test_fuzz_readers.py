"""Property-based (hypothesis) tests of the labelled-file readers on fuzzed
files: :class:`~pyg_unimol2.datasets.TabularDataset` (CSV / TSV / TXT,
gzipped or not, byte-order mark, CRLF, quoting, ragged rows, blank lines,
odd label cells, duplicate molecules with conflicting labels) and
:class:`~pyg_unimol2.datasets.SDFDataset` (records of real molecules with
truncation, garbage lines, missing ``$$$$``, broken counts lines, odd
properties, empty records).

Property: every data row / record comes back exactly once, as a molecule
(``idx``) or as a skipped row of the report naming it, labels are those of
the cells (or ``NaN`` with a report line), and the only exceptions are
:class:`~pyg_unimol2.errors.UserError` for a whole file that cannot be used
(no observed label, no usable molecule, an unreadable table).

Each example writes its file in its own temporary folder; files hold at
most 8 rows, conformers are embedded without MMFF optimization, in the
calling process (``workers=1``)."""
import csv
import gzip
import glob
import io
import math
import os
import tempfile
from typing import Dict, List, Optional

import pytest
import torch
from conftest import check_dense_contract, fuzz_examples, read_moses
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem

from pyg_unimol2.datasets import SDFDataset, TabularDataset
from pyg_unimol2.datasets.tabular import read_table
from pyg_unimol2.errors import UserError
from pyg_unimol2.tasks import Task, TaskError, encode_label

MAX_ATOMS = 64
OPTIONS = dict(progress=False, log=False, max_atoms=MAX_ATOMS)

# ------------------------------------------------------------- cells
#: Valid SMILES, several spellings of some molecules (duplicates by
#: canonical SMILES), small so that embedding is fast.
VALID = ['CCO', 'OCC', 'C(C)O', 'c1ccccc1', 'C1=CC=CC=C1', 'CC(=O)O',
         'OC(C)=O', '[Na+].[Cl-]', 'C', 'N#N'] + read_moses(2)
INVALID = ['C1CC', 'c1cccc1', 'XYZ', '', ' ', 'C(C', '[Xx]', '*C', 'F=F',
           'C C', 'CCO\nCC', 'C,C', 'C;C', 'C\tC', '"C"', 'C"C', '[#250]',
           'c' * 300, '\u00e9', '\x00']
#: Characters of junk cells: SMILES, delimiters, quotes, line breaks
#: (a bare carriage return only in CRLF form), unicode.
JUNK = 'CNOc1()=#[]+-@ ,;|\t"\'\n.eE0129\u00e9\u03bb\U0001F600\x00'
LABELS = ['', ' ', 'nan', 'NaN', 'NA', 'n/a', 'None', 'null', 'inf', '-inf',
          'Infinity', '1e39', '-1e39', '1e400', '3.4028234e38', '9' * 400,
          'abc', '1,5', '"3"', '1;2', ' 2.5 ', '0x10', '1_000', '\u0662',
          '1\n2', '1\r\n2', '-0', '1e-50', 'a', 'b']


def weighted(*choices):
    """One of the strategies :obj:`choices` ``(weight, strategy)``, drawn
    with these weights."""
    return st.sampled_from([s for w, s in choices for _ in range(w)]
                           ).flatmap(lambda s: s)


junk_text = st.text(alphabet=JUNK, max_size=8)
smiles_cell = weighted(
    (4, st.sampled_from(VALID)),
    (1, st.sampled_from(VALID).map(lambda s: f'  {s} ')),
    (2, st.sampled_from(INVALID)),
    (1, junk_text))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(-10 ** 40, 10 ** 40).map(str),
                    st.integers(-100, 100).map(str))
label_cell = weighted((4, numbers), (2, st.sampled_from(LABELS)),
                      (1, junk_text))
class_cell = st.sampled_from(['a', 'b', ' a ', 'A', 'c', '', 'nan', '0'])
fold_cell = st.one_of(
    st.integers(-2 ** 70, 2 ** 70).map(str),
    st.sampled_from(['', 'inf', '-inf', 'nan', '1e30', '1e400', '2.5', 'x',
                     ' 3 ', '-0', '1e3']))
#: Column -> cells. 'y': regression, 'cls': classification with declared
#: classes, 'name': the name column, 'fold': an extra integer column,
#: 'note': a column no option reads.
CELLS = {'y': label_cell, 'cls': class_cell, 'name': junk_text,
         'fold': fold_cell, 'note': junk_text}
FORMATS = [(',', '.csv'), ('\t', '.tsv'), (';', '.csv'), ('|', '.txt'),
           ('\t', '.txt'), (',', '.txt')]


@st.composite
def tables(draw):
    """A table file's content and the options to read it: the header, the
    rows as written (ragged ones included, blank lines between them) and
    the bytes of the file."""
    optional = draw(st.lists(st.sampled_from(['cls', 'name', 'fold',
                                               'note']), unique=True))
    smiles_name = draw(st.sampled_from(['smiles', 'SMILES', 'Smiles']))
    columns = draw(st.permutations([smiles_name, 'y'] + optional))
    header = [draw(st.sampled_from(['', ' '])) + c for c in columns]
    rows = []
    for _ in range(draw(st.integers(1, 8))):
        row = [draw(smiles_cell if c == smiles_name else CELLS[c])
               for c in columns]
        shape = draw(st.integers(0, 5))
        if shape == 0:  # a short row
            row = row[:draw(st.integers(0, len(row) - 1))]
        elif shape == 1:  # a long row
            row += draw(st.lists(junk_text, min_size=1, max_size=2))
        rows.append(row)
    if rows and draw(st.booleans()):  # the same SMILES, other labels
        source = rows[draw(st.integers(0, len(rows) - 1))]
        k = columns.index(smiles_name)
        smiles = source[k] if k < len(source) else draw(smiles_cell)
        rows.insert(draw(st.integers(0, len(rows))), [
            smiles if c == smiles_name else draw(CELLS[c]) for c in columns])
    delimiter, suffix = draw(st.sampled_from(FORMATS))
    terminator = draw(st.sampled_from(['\n', '\r\n']))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    blank = draw(st.lists(st.booleans(), min_size=len(rows) + 1,
                          max_size=len(rows) + 1))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=terminator,
                        quoting=quoting)
    writer.writerow(header)
    for row, blank_line in zip(rows + [None], blank):
        if blank_line:
            out.write(draw(st.sampled_from(['', ' ', '\t'])) + terminator)
        if row is not None:
            writer.writerow(row)
    text = out.getvalue()
    if draw(st.booleans()):
        text = text[:-len(terminator)]  # no final line break
    raw = (b'\xef\xbb\xbf' if draw(st.booleans()) else b'') + \
        text.encode('utf-8')
    gz = draw(st.booleans())
    if gz:
        raw = gzip.compress(raw, mtime=0)
    return dict(columns=columns, smiles_name=smiles_name, rows=rows,
                delimiter=delimiter, name='table' + suffix +
                ('.gz' if gz else ''), raw=raw)


def _event(what: str) -> None:
    """Counts an outcome in the statistics (``--hypothesis-show-statistics``)
    when called from a hypothesis test."""
    if currently_in_test_context():
        event(what)


def _tasks(columns: List[str]) -> List[Task]:
    tasks = [Task('y')]
    if 'cls' in columns:
        tasks.append(Task('cls', 'classification', classes=['a', 'b']))
    return tasks


def _encode(task: Task, cell: str):
    """The label of :obj:`cell`: a float (NaN when missing) or the
    TaskError it raises."""
    try:
        return encode_label(task, cell)
    except TaskError as e:
        return e


def _read_csv(path: str) -> List[Dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _report_of(root: str) -> List[Dict]:
    """The report a failed processing wrote before raising."""
    paths = glob.glob(os.path.join(root, 'processed', '*_report.csv'))
    assert len(paths) == 1, paths
    return [dict(r, row=int(r['row'])) for r in _read_csv(paths[0])]


def _canonical(smiles: str) -> str:
    with rdBase.BlockLogs():
        return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def _fold(cell: str) -> Optional[int]:
    """The value of an extra integer cell, :obj:`None` if it is none."""
    try:
        value = int(float(cell.strip()))
    except (ValueError, OverflowError):
        return None
    return value if -2 ** 63 <= value < 2 ** 63 else None


def _check_labels(data, row_cells: Dict[str, str], tasks: List[Task],
                  bad: Dict[str, Dict]) -> None:
    """``y`` holds the label of every task cell; bad cells are NaN with a
    report line, missing ones NaN without."""
    assert data.y.shape == (1, len(tasks)) and data.y.dtype == torch.float32
    for j, task in enumerate(tasks):
        cell = row_cells[task.name]
        label = _encode(task, cell)
        value = float(data.y[0, j])
        if isinstance(label, TaskError):
            assert math.isnan(value)
            assert bad[task.name]['value'] == cell
            assert bad[task.name]['reason']
        else:
            assert task.name not in bad
            if math.isnan(label):
                assert math.isnan(value)
            else:
                assert value == float(torch.tensor(label,
                                                   dtype=torch.float32))
                assert math.isfinite(value)


def check_table(table: Dict, tmp: str) -> None:
    path = os.path.join(tmp, table['name'])
    with open(path, 'wb') as f:
        f.write(table['raw'])
    columns, smiles_name = table['columns'], table['smiles_name']
    width = len(columns)
    # The data rows as read: blank lines are not rows, short rows are
    # padded, long ones cut.
    expected = [(r + [''] * (width - len(r)))[:width] for r in table['rows']
                if any(c.strip() for c in r)]
    header, rows, _ = read_table(path)
    assert header == columns and rows == expected
    cells = [dict(zip(columns, r)) for r in expected]
    tasks = _tasks(columns)
    extra = {'fold': 'fold'} if 'fold' in columns else None
    root = os.path.join(tmp, 'root')
    try:
        ds = TabularDataset(root, path, tasks, smiles_col='smiles',
                            name_col='name' if 'name' in columns else None,
                            extra_cols=extra, workers=1, optimize=False,
                            **OPTIONS)
    except TaskError as e:
        # A task without any observed label in the whole file.
        assert 'no observed label' in str(e), e
        _event(f'table: no observed label, {len(cells)} rows, {str(e)[:12]}')
        task = next(t for t in tasks if f"task '{t.name}'" in str(e))
        assert all(isinstance(_encode(task, c[task.name]), TaskError) or
                   math.isnan(_encode(task, c[task.name])) for c in cells)
        return
    except UserError as e:
        assert 'no molecule could be featurized' in str(e), e
        _event('table: no molecule')
        kept, report, duplicates = {}, _report_of(root), []
    else:
        kept = {int(d.idx): d for d in ds}
        assert len(kept) == len(ds)  # each row at most once
        report, duplicates = ds.report, ds.duplicates
        _event(f'table: {len(ds)} molecules')
    skipped = [r['row'] for r in report if r['column'] == smiles_name]
    assert len(set(skipped)) == len(skipped)
    assert sorted(list(kept) + skipped) == list(range(len(expected)))
    by_row: Dict[int, Dict[str, Dict]] = {}
    for line in report:
        row = line['row']
        assert line['reason'].strip()
        if line['column'] == smiles_name:  # a skipped row, named
            smiles = cells[row][smiles_name].strip()
            assert line['smiles'] == smiles and line['value'] == smiles
            assert repr(smiles) in line['reason'], line
        else:  # a bad cell of a kept row
            assert row in kept and line['column'] in ('y', 'cls', 'fold')
            assert line['column'] not in by_row.setdefault(row, {})
            by_row[row][line['column']] = line
    for row, data in kept.items():
        check_dense_contract(data, MAX_ATOMS)
        row_cells = cells[row]
        assert data.smiles == row_cells[smiles_name].strip()
        assert data.name == row_cells.get('name', '').strip()
        bad = by_row.get(row, {})
        _check_labels(data, row_cells, ds.tasks, bad)
        if extra:
            fold = _fold(row_cells['fold'])
            assert int(data.fold) == (-1 if fold is None else fold)
            assert ('fold' in bad) == (fold is None)
    # Rows of one molecule with different labels: all kept, all listed.
    groups: Dict[str, List[int]] = {}
    for row in sorted(kept):
        groups.setdefault(_canonical(kept[row].smiles), []).append(row)
    conflicts = set()
    for key, members in groups.items():
        for j, task in enumerate(_tasks(columns)):
            seen = [(r, float(kept[r].y[0, j])) for r in members
                    if not math.isnan(float(kept[r].y[0, j]))]
            if len({v for _, v in seen}) > 1:
                conflicts.add((key, tuple(r for r, _ in seen), task.name))
    assert {(d['canonical_smiles'], tuple(d['rows']), d['column'])
            for d in duplicates} == conflicts
    for d in duplicates:
        assert d['values'] == [cells[r][d['column']].strip()
                               for r in d['rows']]


@settings(max_examples=fuzz_examples(150))
@given(table=tables())
def test_table_rows_come_back_once(table):
    with tempfile.TemporaryDirectory() as tmp:
        check_table(table, tmp)


def _raw_table(text: str) -> Dict:
    """A hand-written table (``,`` or ``;``, a SMILES column and ``y``) in
    the form :func:`tables` draws."""
    body = text.lstrip('\ufeff')
    delimiter = ';' if ';' in body.split('\n')[0] else ','
    rows = list(csv.reader(io.StringIO(body, newline=''),
                           delimiter=delimiter))
    smiles_name = next(c for c in rows[0] if c.lower() == 'smiles')
    return dict(columns=rows[0], smiles_name=smiles_name, rows=rows[1:],
                delimiter=delimiter, name='table.csv',
                raw=text.encode('utf-8'))


@pytest.mark.parametrize('text', [
    'smiles,y\n',  # no data row
    'smiles,y\n\n \n,\n',  # blank lines and an empty row: no data row
    '\ufeffsmiles;y\r\nCCO;1\r\n\r\nOCC;2\r\nC1CC;3',
    'SMILES,y,note\n"CCO",1\nOCC\n"CC\nO",2,"a,\nb"\nCCN,3,x,y,z\n',
    # A label over the float32 range: RuntimeError in torch (overflow).
    'smiles,y\nCCO,1e39\nCCC,2\n',
    # An extra integer column with inf / a value over int64: OverflowError.
    'smiles,y,fold\nCCO,1,inf\nCCC,2,1e30\nCCN,3,2\n',
])
def test_table_edge_cases(text, tmp_path):
    check_table(_raw_table(text), str(tmp_path))


@pytest.mark.parametrize('text', [
    'smiles,y\nCCO,1\nCC\rC,2\n',  # a bare carriage return: csv.Error
    'smiles,y\nCCO,"1\n' + 'x' * 140000 + '\n',  # over the csv field limit
])
def test_unreadable_table_is_a_user_error(text, tmp_path):
    path = tmp_path / 'table.csv'
    path.write_bytes(text.encode())
    with pytest.raises(UserError, match='cannot be read as a table row'):
        TabularDataset(str(tmp_path / 'root'), str(path), [Task('y')],
                       workers=1, optimize=False, **OPTIONS)


# ---------------------------------------------------------------- SDF
SD_SMILES = read_moses(2) + ['CCO', 'c1ccncc1', 'CC(=O)[O-].[Na+]']


class Blocks(list):
    """Mol blocks, shown short in hypothesis' falsifying examples."""

    def __repr__(self) -> str:
        return f'<{len(self)} mol blocks>'


@pytest.fixture(scope='module')
def sd_blocks() -> List[str]:
    """Mol blocks of a few molecules with an embedded 3D conformer (with
    hydrogens), and one 2D block (no 3D conformer) last."""
    blocks = Blocks()
    for smiles in SD_SMILES:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        assert AllChem.EmbedMolecule(mol, randomSeed=0) == 0
        blocks.append(Chem.MolToMolBlock(mol))
    flat = Chem.MolFromSmiles('CCN')
    AllChem.Compute2DCoords(flat)
    blocks.append(Chem.MolToMolBlock(flat))
    return blocks


SD_CORRUPTIONS = ['none', 'none', 'none', 'truncate', 'garbage', 'counts',
                  'no_end', 'empty', 'odd_property', 'latin1']
sd_value = weighted(
    (4, numbers),
    (2, st.sampled_from([v for v in LABELS if '\n' not in v] +
                        ['1.5\n2.5'])),
    (1, st.text(alphabet=JUNK.replace('\n', ''), max_size=8)))
sd_title = st.text(alphabet='CNO abc$>< \t\u00e9', max_size=10).filter(
    lambda t: not t.startswith('$$$$'))  # that would end the record


@st.composite
def sd_files(draw, blocks: List[str]):
    """An SD file of up to 8 records: ``(text, records)`` where each record
    is ``dict(kind, corruption, title, y, terminated)``."""
    parts, records = [], []
    for _ in range(draw(st.integers(1, 8))):
        k = draw(st.integers(0, len(blocks) - 1))
        lines = blocks[k].splitlines()
        title = draw(sd_title)
        lines[0] = title
        y = draw(sd_value)
        has_y = draw(st.sampled_from([True] * 5 + [False]))
        props = [] if not has_y else ['> <y>', *(
            y.split('\n') if y.strip() else [y]), '']
        props += ['> <note>', draw(sd_title), '']
        corruption = draw(st.sampled_from(SD_CORRUPTIONS))
        text_lines = lines + props
        encoding = 'utf-8'
        if corruption == 'truncate':
            text_lines = text_lines[:draw(st.integers(
                0, len(lines) - 2))]
        elif corruption == 'garbage':
            i = draw(st.integers(0, len(text_lines)))
            text_lines.insert(i, draw(st.sampled_from(
                ['garbage', '', 'M  END', '> <y>', '  1.0  2.0  x',
                 'M  CHG  1   1   9'])))
        elif corruption == 'counts':
            text_lines[3] = draw(st.sampled_from(
                ['', 'xx', '999999999999', '  1  0  0  0  0  0  0  0  0  0'
                 '999 V2000', '  0  0  0  0  0  0  0  0  0  0999 V2000',
                 text_lines[3][:10]]))
        elif corruption == 'empty':
            text_lines = draw(st.sampled_from([[], [''], ['   ', '']]))
        elif corruption == 'odd_property':
            text_lines = lines + draw(st.sampled_from([
                ['>  <y>  (1)', y, ''], ['> y', y, ''], ['> <y>', y],
                ['> <y>', y, '', '> <y>', '7', ''], ['> <>', y, ''],
                ['<y>', y, '']]))
        elif corruption == 'latin1':
            encoding = 'latin-1'
            text_lines[0] = 'caf\u00e9'
        terminated = corruption != 'no_end'
        text = '\n'.join(text_lines) + '\n'
        if terminated:
            text += '$$$$\n'
        parts.append(text.encode(encoding, errors='replace'))
        kind = 'flat' if k == len(blocks) - 1 else '3d'
        records.append(dict(kind=kind, corruption=corruption,
                            title=title, y=y if props[:1] == ['> <y>']
                            else None, terminated=terminated))
    return b''.join(parts), records


def _chunks(records: List[Dict]) -> List[Optional[Dict]]:
    """The records the reader should see: one per ``$$$$``, and the text
    after the last one unless blank; a record without ``$$$$`` merges with
    the next one (``None``: outcome unknown)."""
    out, pending = [], []
    for record in records:
        pending.append(record)
        if record['terminated']:
            out.append(pending[0] if len(pending) == 1 else None)
            pending = []
    if any(r['corruption'] != 'empty' for r in pending):
        out.append(None)
    return out


@settings(max_examples=fuzz_examples(150))
@given(data=st.data())
def test_sd_records_come_back_once(data, sd_blocks):
    raw, records = data.draw(sd_files(sd_blocks))
    gz = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as tmp:
        check_sd(raw, records, gz, tmp)


def check_sd(raw: bytes, records: List[Dict], gz: bool, tmp: str) -> None:
    path = os.path.join(tmp, 'mols.sdf' + ('.gz' if gz else ''))
    with open(path, 'wb') as f:
        f.write(gzip.compress(raw, mtime=0) if gz else raw)
    chunks = _chunks(records)
    intact = [i for i, c in enumerate(chunks)
              if c is not None and c['corruption'] == 'none']
    usable = [i for i in intact if chunks[i]['kind'] == '3d' and
              chunks[i]['y'] is not None and
              not isinstance(_encode(Task('y'), chunks[i]['y']), TaskError)
              and not math.isnan(_encode(Task('y'), chunks[i]['y']))]
    root = os.path.join(tmp, 'root')
    try:
        ds = SDFDataset(root, path, [Task('y')], **OPTIONS)
    except UserError as e:
        # Only a whole file without any usable record.
        assert not usable, (e, usable)
        _event(f'sdf: {type(e).__name__} {str(e)[:40]}')
        if 'no molecule could be featurized' not in str(e):
            return
        kept, report = {}, _report_of(root)
    else:
        kept = {int(d.idx): d for d in ds}
        assert len(kept) == len(ds)
        report = ds.report
        _event(f'sdf: {len(ds)} of {len(chunks)} records kept')
    skipped = [r['row'] for r in report if r['column'] == '']
    assert len(set(skipped)) == len(skipped)
    assert sorted(list(kept) + skipped) == list(range(len(chunks))), \
        (sorted(list(kept) + skipped), records)
    for line in report:
        assert line['reason'].strip()
        if line['column']:
            assert line['row'] in kept and line['column'] == 'y'
    for i in intact:
        record = chunks[i]
        if record['kind'] == 'flat':
            line = next(r for r in report if r['row'] == i)
            assert line['reason'] == 'no 3D conformer'
            continue
        assert i in kept, (i, report)  # an intact record is never lost
        data = kept[i]
        check_dense_contract(data, MAX_ATOMS)
        assert data.name == record['title'].strip()
        bad = {r['column']: r for r in report
               if r['row'] == i and r['column']}
        cell = record['y'] if record['y'] is not None else ''
        _check_labels(data, {'y': cell}, [Task('y')], bad)
    for i in kept:
        check_dense_contract(kept[i], MAX_ATOMS)


def test_sd_found_bugs(sd_blocks, tmp_path):
    """A broken record (truncated, garbage, empty) no longer hides the
    valid record after it; a record that is not UTF-8 is a failure."""
    good = sd_blocks[0] + '> <y>\n1.5\n\n$$$$\n'
    lines = good.splitlines(True)
    raw = (good + ''.join(lines[:8]) + '$$$$\n' + good + 'garbage\n$$$$\n' +
           good + '$$$$\n' + good).encode()
    raw += ('caf\u00e9\n' + ''.join(lines[1:])).encode('latin-1') + \
        good.encode() + b'\n'  # a blank line after the last $$$$: no record
    path = tmp_path / 'mols.sdf'
    path.write_bytes(raw)
    ds = SDFDataset(str(tmp_path / 'root'), str(path), [Task('y')],
                    **OPTIONS)
    assert [int(d.idx) for d in ds] == [0, 2, 4, 6, 8]
    reasons = {r['row']: r['reason'] for r in ds.report}
    assert set(reasons) == {1, 3, 5, 7}
    assert reasons[5].startswith('empty record')
    assert reasons[7].startswith('unreadable record')
