"""TabularDataset on small tables the tests write: rows of the real B3DB
file (TSV, gzipped CSV, the external file with its byte-order mark) and
hand-made tables for errors, duplicates, caching and atom-level labels."""
import csv
import gzip
import math
import os

import pytest
import torch
from conftest import SHARED
from rdkit import Chem
from rdkit.Chem import AllChem, Descriptors
from torch_geometric.data import Batch

from pyg_unimol2.datasets import TabularDataset
from pyg_unimol2.datasets.tabular import prepare_tasks, read_table
from pyg_unimol2.tasks import Task, TaskError, label_slices

B3DB_DIR = SHARED / 'datasets' / 'b3db'
B3DB_TSV = B3DB_DIR / 'B3DB_classification.tsv'
B3DB_EXTERNAL = B3DB_DIR / 'B3DB_classification_external.tsv'
# BBB- with logBB, BBB+ with logBB = -1, BBB+ / BBB- without logBB.
ROWS = [0, 2, 3, 5, 128, 131, 132, 133, 1500, 1501, 3002, 7804, 7805, 7806]
B3DB_TASKS = [Task('BBB+/BBB-', 'classification'),
              Task('logBB', unit='log(Cbrain/Cblood)')]


def open_kw(**kw):
    return dict(workers=2, progress=False, log=False, **kw)


@pytest.fixture(scope='module')
def b3db_lines():
    if not B3DB_TSV.is_file():
        pytest.fail(f'B3DB file not found at {B3DB_TSV}')
    with open(B3DB_TSV, encoding='utf-8') as f:
        lines = f.read().splitlines()
    return lines[0], [lines[1 + i] for i in ROWS]


@pytest.fixture(scope='module')
def b3db_subset(tmp_path_factory, b3db_lines):
    """The selected rows as a TSV, the same as a gzipped CSV, and the rows
    read with the csv module."""
    folder = tmp_path_factory.mktemp('b3db_files')
    header, lines = b3db_lines
    tsv = folder / 'b3db_subset.tsv'
    tsv.write_text('\n'.join([header] + lines) + '\n', encoding='utf-8')
    with open(tsv, newline='') as f:
        table = list(csv.reader(f, delimiter='\t'))
    csv_gz = folder / 'b3db_subset.csv.gz'
    with gzip.open(csv_gz, 'wt', newline='') as f:
        csv.writer(f).writerows(table)
    rows = [dict(zip(table[0], r)) for r in table[1:]]
    return tsv, csv_gz, rows


@pytest.fixture(scope='module')
def b3db_ds(tmp_path_factory, b3db_subset):
    root = tmp_path_factory.mktemp('b3db_root')
    return TabularDataset(str(root), str(b3db_subset[0]), B3DB_TASKS,
                          smiles_col='SMILES', name_col='compound_name',
                          **open_kw())


def test_b3db_labels_equal_file_cells(b3db_ds, b3db_subset):
    rows = b3db_subset[2]
    assert len(b3db_ds) == len(ROWS)
    assert b3db_ds.y.shape == (len(ROWS), 2)
    assert b3db_ds.y.dtype == torch.float32
    # Classes inferred from the column, positive (BBB+) second.
    tasks = b3db_ds.tasks
    assert tasks[0].classes == ['BBB-', 'BBB+']
    assert tasks[1].classes is None and tasks[1].unit == 'log(Cbrain/Cblood)'
    assert label_slices(tasks) == {'BBB+/BBB-': ('y', slice(0, 1)),
                                   'logBB': ('y', slice(1, 2))}
    missing = 0
    for k, data in enumerate(b3db_ds):
        i = int(data.idx)
        assert i == k  # 0-based data row
        row = rows[i]
        assert data.smiles == row['SMILES']
        assert data.name == row['compound_name']
        assert data.split_tag == ''
        assert data.y.shape == (1, 2)
        assert data.y[0, 0].item() == (1.0 if row['BBB+/BBB-'] == 'BBB+'
                                       else 0.0)
        if row['logBB'] == '':
            assert math.isnan(data.y[0, 1].item())
            missing += 1
        else:
            assert data.y[0, 1].item() == pytest.approx(float(row['logBB']),
                                                        abs=1e-6)
        assert 'atom_y' not in data  # no atom-level task
        assert data.pos.shape == (data.num_nodes, 3)
    assert missing == 6
    assert b3db_ds.report == [] and b3db_ds.duplicates == []
    assert repr(b3db_ds) == ("TabularDataset(b3db_subset.tsv, 14, "
                             "tasks=['BBB+/BBB-', 'logBB'])")
    with open(b3db_ds.report_path) as f:
        assert f.read().strip() == 'row,smiles,column,value,reason'
    assert b3db_ds.report_path.endswith('_report.csv')
    assert b3db_ds.duplicates_path.endswith('_duplicates.csv')


def test_gzipped_csv_reads_the_same(tmp_path, b3db_ds, b3db_subset):
    # Comma-delimited (sniffed from the header), quoted cells, gzip.
    gz = TabularDataset(str(tmp_path), str(b3db_subset[1]), B3DB_TASKS,
                        smiles_col='smiles', name_col='COMPOUND_NAME',
                        **open_kw())
    assert len(gz) == len(b3db_ds)
    assert torch.equal(torch.nan_to_num(gz.y, 99.0),
                       torch.nan_to_num(b3db_ds.y, 99.0))
    assert [d.smiles for d in gz] == [d.smiles for d in b3db_ds]
    assert [d.name for d in gz] == [d.name for d in b3db_ds]
    for a, b in zip(gz, b3db_ds):
        assert torch.equal(a.pos, b.pos) and torch.equal(a.z, b.z)
    assert gz.tasks[0].classes == ['BBB-', 'BBB+']


def test_byte_order_mark_header(tmp_path):
    header, rows, delim = read_table(str(B3DB_EXTERNAL))
    assert delim == '\t' and header[0] == 'NO.' and len(rows) == 175
    with open(B3DB_EXTERNAL, 'rb') as f:
        lines = f.read().split(b'\n')
    assert lines[0].startswith(b'\xef\xbb\xbf')
    small = tmp_path / 'external.tsv'
    small.write_bytes(b'\n'.join(lines[:5]) + b'\n')
    ds = TabularDataset(
        str(tmp_path / 'root'), str(small),
        [Task('BBB+/BBB-', 'classification', classes=['BBB-', 'BBB+'])],
        smiles_col='SMILES', name_col='NO.', workers=1, progress=False,
        log=False)
    assert [d.name for d in ds] == ['1', '2', '3', '4']


def test_full_b3db_columns_and_classes():
    """Cheap whole-file checks: no featurization."""
    header, rows, delim = read_table(str(B3DB_TSV))
    assert delim == '\t' and len(rows) == 7807
    col = {c: header.index(c) for c in ('SMILES', 'logBB', 'BBB+/BBB-')}
    values = {'BBB+/BBB-': [r[col['BBB+/BBB-']] for r in rows],
              'logBB': [r[col['logBB']] for r in rows]}
    tasks = prepare_tasks(B3DB_TASKS, values, 'B3DB_classification.tsv')
    assert tasks[0].classes == ['BBB-', 'BBB+']
    assert values['BBB+/BBB-'].count('BBB+') == 4956
    assert sum(v != '' for v in values['logBB']) == 1058
    assert B3DB_TASKS[0].classes is None  # the declared tasks are untouched


def test_prepare_tasks_class_inference():
    values = {'grade': ['10', '2', '', '1', 'NA', '2'],
              'a': ['0', '1', ''], 'b': ['1', '1', '1'],
              'flag': ['1', '1', ''], 'kind': ['x', 'x', ''],
              'empty': ['', 'nan', 'NA'], 'text': ['low', 'high', 'abc']}
    tasks = prepare_tasks([
        Task('grade', 'multiclass'),
        Task('ml', 'multilabel', columns=['a', 'b']),
        Task('flag', 'classification')], values, 'f.csv')
    assert [t.classes for t in tasks] == [['1', '2', '10'], ['0', '1'],
                                          ['0', '1']]
    # Multi-label columns with 0/1 cells: other values are bad cells later.
    ml = prepare_tasks([Task('ml', 'multilabel', columns=['a', 'text'])],
                       values, 'f.csv')
    assert ml[0].classes == ['0', '1']
    with pytest.raises(TaskError, match=r"'kind'.*only the class.*f\.csv"):
        prepare_tasks([Task('kind', 'classification')], values, 'f.csv')
    with pytest.raises(TaskError, match=r"'empty'.*no observed label.*"
                                        r"f\.csv"):
        prepare_tasks([Task('empty')], values, 'f.csv')
    with pytest.raises(TaskError, match='f.csv.*two classes'):
        prepare_tasks([Task('text', 'classification')], values, 'f.csv')


ERRORS_CSV = """smiles,activity,logS,name,split
CCO,active,-0.5,ethanol,train
c1ccccc1,inactive,abc,benzene,train
C1CC,active,1.0,broken,test
CCN,,0.3,ethylamine,test
OCC,inactive,-0.7,ethanol again,train
CC(=O)O,maybe,0.1,acetic acid,test
CCCC,active,,butane,train
"""
ERROR_TASKS = [Task('activity', 'classification',
                    classes=['inactive', 'active']),
               Task('logS', unit='log(mol/L)')]


@pytest.fixture(scope='module')
def errors_ds(tmp_path_factory):
    folder = tmp_path_factory.mktemp('errors')
    path = folder / 'errors.csv'
    path.write_text(ERRORS_CSV)
    return TabularDataset(str(folder / 'root'), str(path), ERROR_TASKS,
                          name_col='name', split_col='split', workers=1,
                          progress=False)


def test_bad_smiles_and_bad_labels_reported(errors_ds):
    ds = errors_ds
    assert [int(d.idx) for d in ds] == [0, 1, 3, 4, 5, 6]  # row 2 skipped
    assert [d.split_tag for d in ds] == ['train', 'train', 'test', 'train',
                                         'test', 'train']
    y = {int(d.idx): d.y[0].tolist() for d in ds}
    assert y[0] == [1.0, pytest.approx(-0.5)]
    assert y[1][0] == 0.0 and math.isnan(y[1][1])  # activity kept
    assert math.isnan(y[3][0]) and y[3][1] == pytest.approx(0.3)
    assert math.isnan(y[5][0]) and y[5][1] == pytest.approx(0.1)
    assert math.isnan(y[6][1])
    report = ds.report
    assert [(r['row'], r['column'], r['value']) for r in report] == [
        (1, 'logS', 'abc'), (2, 'smiles', 'C1CC'), (5, 'activity', 'maybe')]
    assert 'not a number' in report[0]['reason']
    assert 'unparsable SMILES' in report[1]['reason']
    assert 'not one of the classes' in report[2]['reason']
    assert report[0]['smiles'] == 'c1ccccc1'
    with open(ds.report_path, newline='') as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == ['row', 'smiles', 'column', 'value', 'reason']
    assert [dict(r, row=int(r['row'])) for r in lines] == report
    assert ds.processing_stats['skipped'] == 1
    assert ds.processing_stats['bad_labels'] == 2


def test_duplicates_with_conflicting_labels(errors_ds):
    dups = errors_ds.duplicates
    assert dups == [
        dict(canonical_smiles='CCO', rows=[0, 4], column='activity',
             values=['active', 'inactive']),
        dict(canonical_smiles='CCO', rows=[0, 4], column='logS',
             values=['-0.5', '-0.7'])]
    with open(errors_ds.duplicates_path, newline='') as f:
        lines = list(csv.reader(f))
    assert lines == [['canonical_smiles', 'rows', 'column', 'values'],
                     ['CCO', '0;4', 'activity', 'active;inactive'],
                     ['CCO', '0;4', 'logS', '-0.5;-0.7']]


def test_summary_and_duplicate_warning_printed(tmp_path, capsys):
    path = tmp_path / 'errors.csv'
    path.write_text(ERRORS_CSV)
    TabularDataset(str(tmp_path / 'root'), str(path), ERROR_TASKS,
                   workers=1, progress=False)
    out = capsys.readouterr().out
    assert 'errors.csv: 6 of 7 molecules kept' in out
    assert '1 skipped, 2 bad labels' in out
    assert 'Warning: 2 conflicting labels between duplicate molecules' in out


def test_missing_columns_errors(tmp_path):
    path = tmp_path / 'mols.csv'
    path.write_text('smi,logS\nCCO,1.0\n')
    with pytest.raises(TaskError, match=r"mols\.csv.*'smiles'.*"
                                        r"\['smi', 'logS'\]"):
        TabularDataset(str(tmp_path), str(path), [Task('logS')], log=False)
    with pytest.raises(TaskError, match=r"mols\.csv.*'pIC50'.*"
                                        r"\['smi', 'logS'\]"):
        TabularDataset(str(tmp_path), str(path), [Task('pIC50')],
                       smiles_col='SMI', log=False)
    bad = tmp_path / 'bad.csv'
    bad.write_text('smiles,logS\nXX,1.0\nC1C,2.0\n')
    with pytest.raises(ValueError, match='bad.csv: no molecule could be '
                                         'featurized'):
        TabularDataset(str(tmp_path), str(bad), [Task('logS')], workers=1,
                       progress=False, log=False)
    with pytest.raises(FileNotFoundError, match='nothere.csv'):
        TabularDataset(str(tmp_path), str(tmp_path / 'nothere.csv'),
                       [Task('logS')], log=False)


def test_task_without_observed_label(tmp_path):
    path = tmp_path / 'sparse.tsv'
    path.write_text('smiles\tlogS\tpIC50\nCCO\t1.0\t\nCCN\t0.5\tNA\n')
    with pytest.raises(TaskError, match=r"'pIC50'.*no observed label.*"
                                        r"sparse\.tsv"):
        TabularDataset(str(tmp_path), str(path),
                       [Task('logS'), Task('pIC50')], workers=1,
                       progress=False, log=False)


def test_cache_reopen_and_invalidation(tmp_path, monkeypatch):
    path = tmp_path / 'small.csv'
    path.write_text('SMILES,label,y\nCCO,yes,1.5\nCCN,no,2.5\nCCC,yes,\n')
    tasks = [Task('label', 'classification'), Task('y')]
    kw = dict(workers=1, progress=False, log=False)
    ds = TabularDataset(str(tmp_path / 'root'), str(path), tasks, **kw)
    assert ds.tasks[0].classes == ['no', 'yes']
    pt = ds.processed_paths[0]
    mtime = os.stat(pt).st_mtime_ns
    calls = []

    def no_process(self):
        calls.append(1)
        raise AssertionError('reprocessed')

    monkeypatch.setattr(TabularDataset, 'process', no_process)
    again = TabularDataset(str(tmp_path / 'root'), str(path), tasks, **kw)
    assert calls == [] and os.stat(pt).st_mtime_ns == mtime
    assert again.processed_paths == ds.processed_paths
    assert again.tasks[0].classes == ['no', 'yes']  # restored from JSON
    assert torch.equal(torch.nan_to_num(again.y), torch.nan_to_num(ds.y))
    # Options that change the result change the cache.
    for changed in (dict(seed=1), dict(remove_hs=False),
                    dict(optimize=False), dict(max_atoms=10)):
        with pytest.raises(AssertionError, match='reprocessed'):
            TabularDataset(str(tmp_path / 'root'), str(path), tasks,
                           **dict(kw, **changed))
    with pytest.raises(AssertionError, match='reprocessed'):
        TabularDataset(str(tmp_path / 'root'), str(path), tasks[:1], **kw)
    # A changed file is reprocessed.
    path.write_text('SMILES,label,y\nCCO,yes,1.5\nCCN,no,3.5\nCCC,yes,\n')
    with pytest.raises(AssertionError, match='reprocessed'):
        TabularDataset(str(tmp_path / 'root'), str(path), tasks, **kw)
    monkeypatch.undo()
    new = TabularDataset(str(tmp_path / 'root'), str(path), tasks, **kw)
    assert new.processed_paths[0] != pt
    assert new.y[1, 1].item() == 3.5 and ds.y[1, 1].item() == 2.5
    # The file is read in place: nothing copied to raw/.
    assert not os.path.exists(tmp_path / 'root' / 'raw') or \
        os.listdir(tmp_path / 'root' / 'raw') == []


ATOM_SMILES = ['CCO', 'c1ccccc1O', 'CC(=O)N', 'OCC(N)C(=O)O', 'ClCC#N']


def gasteiger(mol):
    AllChem.ComputeGasteigerCharges(mol)
    return [a.GetDoubleProp('_GasteigerCharge') for a in mol.GetAtoms()]


def write_atom_table(path, remove_hs):
    expected = {}
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['smiles', 'charges', 'mw'])
        for i, smi in enumerate(ATOM_SMILES):
            mol = Chem.MolFromSmiles(smi)
            if not remove_hs:
                mol = Chem.AddHs(mol)
            q = [round(v, 6) for v in gasteiger(mol)]
            expected[i] = ([a.GetAtomicNum() for a in mol.GetAtoms()], q)
            sep = ';' if i % 2 else ' '
            w.writerow([smi, sep.join(f'{v:.6f}' for v in q),
                        f'{Descriptors.MolWt(mol):.4f}'])
        w.writerow(['CCC', '0.1 0.2', '44.1'])  # wrong count: row 5
        w.writerow(['CCCl', '', '78.5'])  # no atom labels: row 6
    return expected


@pytest.mark.parametrize('remove_hs', [True, False])
def test_atom_level_labels(tmp_path, remove_hs):
    path = tmp_path / 'atoms.csv'
    expected = write_atom_table(path, remove_hs)
    tasks = [Task('charge', level='atom', columns=['charges'], unit='e'),
             Task('mw', unit='g/mol')]
    ds = TabularDataset(str(tmp_path / 'root'), str(path), tasks,
                        remove_hs=remove_hs, workers=1, progress=False,
                        log=False)
    assert label_slices(ds.tasks) == {'charge': ('atom_y', slice(0, 1)),
                                      'mw': ('y', slice(0, 1))}
    assert len(ds) == 7
    for data in ds:
        i = int(data.idx)
        assert data.atom_y.shape == (data.num_nodes, 1)
        assert data.atom_y.dtype == torch.float32
        assert data.y.shape == (1, 1) and not torch.isnan(data.y).any()
        if i in expected:
            z, q = expected[i]
            assert data.z.tolist() == z  # the SMILES' atom order
            assert torch.allclose(data.atom_y[:, 0], torch.tensor(q),
                                  atol=1e-6)
        else:
            assert torch.isnan(data.atom_y).all()
    assert [(r['row'], r['column']) for r in ds.report] == [(5, 'charges')]
    assert 'expected' in ds.report[0]['reason'] and \
        'got 2' in ds.report[0]['reason']
    batch = Batch.from_data_list(list(ds[:3]))
    assert batch.atom_y.shape == (batch.num_nodes, 1)
    assert batch.y.shape == (3, 1)

