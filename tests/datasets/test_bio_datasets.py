"""B3DB, MoleculeACE and FreeSolv on small files copied from the real ones
(shared/datasets/), plus cheap whole-file checks that featurize nothing."""
import collections
import csv
import math

import pytest
import torch
from conftest import SHARED

from pyg_unimol2.datasets import (B3DB, B3DB_TASKS, FREESOLV_TASKS,
                                  MOLECULEACE_TARGETS, FreeSolv, MoleculeACE)
from pyg_unimol2.datasets.tabular import prepare_tasks, read_table

DATA = SHARED / 'datasets'
KW = dict(workers=2, progress=False, log=False)


def copy_lines(src, dst, rows, encoding='utf-8'):
    """Header and the data rows :obj:`rows` (0-based) of :obj:`src`."""
    with open(src, encoding=encoding, newline='') as f:
        lines = f.read().splitlines()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text('\n'.join([lines[0]] + [lines[1 + i] for i in rows])
                   + '\n', encoding=encoding)


# ------------------------------------------------------------------ B3DB
B3DB_ROWS = [0, 2, 3, 128, 133, 1500, 1501, 3002, 7805, 7806]


def test_b3db_missing_file_says_where_to_download(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r'B3DB_classification\.tsv.*github\.com/'
                             r'theochem/B3DB.*path='):
        B3DB(str(tmp_path))


def test_b3db_default_location_and_tasks(tmp_path):
    src = DATA / 'b3db' / 'B3DB_classification.tsv'
    raw = tmp_path / 'root' / 'raw' / 'B3DB_classification.tsv'
    copy_lines(src, raw, B3DB_ROWS)
    ds = B3DB(str(tmp_path / 'root'), **KW)
    with open(raw, newline='') as f:
        rows = list(csv.DictReader(f, delimiter='\t'))
    assert len(ds) == len(B3DB_ROWS)
    tasks = ds.tasks
    assert [t.name for t in tasks] == ['BBB+/BBB-', 'logBB']
    assert tasks[0].classes == ['BBB-', 'BBB+']
    assert tasks[1].unit == 'log(Cbrain/Cblood)'
    for data in ds:
        row = rows[int(data.idx)]
        assert data.name == row['compound_name']
        assert data.smiles == row['SMILES']
        assert data.y[0, 0].item() == float(row['BBB+/BBB-'] == 'BBB+')
        if row['logBB']:
            assert data.y[0, 1].item() == pytest.approx(float(row['logBB']))
        else:
            assert math.isnan(data.y[0, 1].item())
    assert repr(ds).startswith('B3DB(B3DB_classification.tsv, 10, ')
    # A folder as path: the same file content and options hit the cache.
    again = B3DB(str(tmp_path / 'root'), path=str(raw.parent), **KW)
    assert again.processed_paths == ds.processed_paths


def test_b3db_full_file_labels():
    header, rows, _ = read_table(str(DATA / 'b3db' /
                                     'B3DB_classification.tsv'))
    assert len(rows) == 7807
    values = {c: [r[header.index(c)] for r in rows]
              for c in ('BBB+/BBB-', 'logBB')}
    tasks = prepare_tasks(B3DB_TASKS, values, 'B3DB_classification.tsv')
    assert tasks[0].classes == ['BBB-', 'BBB+']
    assert collections.Counter(values['BBB+/BBB-']) == {'BBB+': 4956,
                                                       'BBB-': 2851}
    assert sum(v != '' for v in values['logBB']) == 1058


# ----------------------------------------------------------- MoleculeACE
def test_moleculeace_targets_and_errors(tmp_path):
    assert len(MOLECULEACE_TARGETS) == 30
    assert sorted(p.stem for p in (DATA / 'moleculeace').glob('*.csv')) == \
        sorted(MOLECULEACE_TARGETS)
    with pytest.raises(ValueError, match='unknown MoleculeACE target'):
        MoleculeACE(str(tmp_path), 'CHEMBL1_Ki')
    with pytest.raises(FileNotFoundError,
                       match=r'CHEMBL204_Ki\.csv.*github\.com/molML/'
                             r'MoleculeACE'):
        MoleculeACE(str(tmp_path))


def test_moleculeace_full_file_splits():
    """Row and split counts of the whole CHEMBL204_Ki file (no
    featurization)."""
    path = DATA / 'moleculeace' / 'CHEMBL204_Ki.csv'
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    header, table, delim = read_table(str(path))
    assert delim == ',' and len(table) == len(rows) == 2754
    split = header.index('split')
    assert collections.Counter(r[split] for r in table) == \
        collections.Counter(r['split'] for r in rows) == \
        {'train': 2201, 'test': 553}


def test_moleculeace_subset(tmp_path):
    folder = tmp_path / 'files'
    target = 'CHEMBL204_Ki'
    copy_lines(DATA / 'moleculeace' / f'{target}.csv',
               folder / f'{target}.csv', list(range(30)))
    with open(folder / f'{target}.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    ds = MoleculeACE(str(tmp_path / 'root'), target, path=str(folder), **KW)
    assert len(ds) == len(rows) == 30
    assert collections.Counter(d.split_tag for d in ds) == \
        collections.Counter(r['split'] for r in rows)
    assert {d.split_tag for d in ds} == {'train', 'test'}
    assert ds.tasks[0].name == 'y' and ds.tasks[0].unit == 'log10(1/nM)'
    for data in ds:
        row = rows[int(data.idx)]
        assert data.cliff.tolist() == [int(row['cliff_mol'])]
        assert data.cliff.dtype == torch.long
        assert data.y[0, 0].item() == pytest.approx(float(row['y']),
                                                    abs=1e-5)
        # y = -log10(activity in nM)
        assert data.y[0, 0].item() == pytest.approx(
            -math.log10(float(row['exp_mean [nM]'])), abs=1e-5)
    assert repr(ds).startswith(f'MoleculeACE({target}.csv, 30, ')


# -------------------------------------------------------------- FreeSolv
def test_freesolv_named_molecules(tmp_path):
    src = DATA / 'freesolv' / 'freesolv.csv'
    header, table, _ = read_table(str(src))
    assert len(table) == 642 and header == ['iupac', 'smiles', 'expt', 'calc']
    names = [r[0] for r in table]
    picks = list(range(20)) + [names.index(n) for n in
                               ('ethanol', 'methane', 'benzene', 'phenol')]
    raw = tmp_path / 'raw' / 'freesolv.csv'
    copy_lines(src, raw, picks)
    ds = FreeSolv(str(tmp_path), **KW)
    assert len(ds) == len(picks)
    assert ds.tasks == FREESOLV_TASKS and ds.tasks[0].unit == 'kcal/mol'
    by_name = {d.name: d for d in ds}
    # Hydration free energy G(water) - G(gas): negative = favourable.
    assert by_name['ethanol'].y.item() == pytest.approx(-5.0)
    assert by_name['methane'].y.item() == pytest.approx(2.0)
    assert by_name['phenol'].y.item() == pytest.approx(-6.6)
    assert by_name['ethanol'].smiles == 'CCO'
    # Quoted names with commas survive.
    assert by_name['4-methoxy-N,N-dimethyl-benzamide'].y.item() == \
        pytest.approx(-11.01)
    for data in ds:
        row = table[picks[int(data.idx)]]
        assert data.name == row[0]
        assert data.y.item() == pytest.approx(float(row[2]))


@pytest.mark.slow
def test_freesolv_full_file(tmp_path):
    """The whole file (642 small molecules, a few seconds)."""
    ds = FreeSolv(str(tmp_path), path=str(DATA / 'freesolv'), **KW)
    assert len(ds) == 642 and ds.report == [] and ds.duplicates == []
    by_name = {d.name: d for d in ds}
    assert by_name['ethanol'].y.item() == pytest.approx(-5.0)
    assert not torch.isnan(ds.y).any()
