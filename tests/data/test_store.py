import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import read_moses

from pyg_unimol2.cli import main
from pyg_unimol2.data import from_smiles
from pyg_unimol2.data.splits import murcko_scaffold
from pyg_unimol2.data.store import (StoreError, StoreReader, build_store,
                                    read_records)

SHARD_SIZE = 32
BROKEN_SMI = {152: 'C1CC(', 154: 'CC[Xx]C'}  # line -> SMILES in mols.smi
BROKEN_CSV = {40: 'CN(C)(C)C', 102: 'not a smiles'}  # line in mols.csv.gz
ROOT = Path(__file__).resolve().parents[2]


def write_inputs(folder: Path):
    """``mols.smi``: header, 150 MOSES molecules with names, a comment, a
    blank line and two broken lines; ``mols.csv.gz``: 100 more (quoted, with
    an id column) and two broken rows. 254 records, 4 failures."""
    moses = read_moses(250)
    lines = ['smiles name'] + [f'{s} moses_{i}' for i, s in
                               enumerate(moses[:150])]
    lines += ['C1CC( broken_ring', '# a comment', 'CC[Xx]C', '']
    (folder / 'mols.smi').write_text('\n'.join(lines) + '\n')
    rows = [[f'id{i}', s] for i, s in enumerate(moses[150:])]
    rows.insert(38, ['bad1', 'CN(C)(C)C'])
    rows.insert(100, ['bad2', 'not a smiles'])
    with gzip.open(folder / 'mols.csv.gz', 'wt', newline='') as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(['mol_id', 'SMILES'])
        writer.writerows(rows)
    return [folder / 'mols.smi', folder / 'mols.csv.gz']


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp('inputs'))


@pytest.fixture(scope='module')
def store(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp('store') / 'store'
    summary = build_store(inputs, out, workers=2, shard_size=SHARD_SIZE,
                          progress=False, verbose=False)
    return out, summary


def test_read_records(inputs, tmp_path):
    smi = list(read_records(inputs[0]))
    assert len(smi) == 152
    assert smi[0][0] == 2 and smi[0][2] == 'moses_0'  # header skipped
    assert smi[-1] == (154, 'CC[Xx]C', '')
    assert (152, 'C1CC(', 'broken_ring') in smi
    rows = list(read_records(inputs[1]))
    assert len(rows) == 102 and rows[0][2] == 'id0'
    assert rows[38][:2] == (40, 'CN(C)(C)C')
    tsv = tmp_path / 'x.tsv'
    tsv.write_text('name\tsmi\na\tCCO\nb\t\nc\tc1ccccc1\n')
    assert list(read_records(tsv)) == [(2, 'CCO', 'a'), (4, 'c1ccccc1', 'c')]
    plain = tmp_path / 'x.csv'
    plain.write_text('structure,value\nCCO,1\n')  # first column
    assert list(read_records(plain)) == [(2, 'CCO', '')]


def test_manifest_index_and_failures(store, inputs):
    out, summary = store
    assert (summary.num_records, summary.num_molecules,
            summary.num_failures) == (254, 250, 4)
    assert summary.num_shards == summary.built_shards == 8
    manifest = json.loads((out / 'manifest.json').read_text())
    counts = manifest['counts']
    assert counts['records'] == 254 and counts['molecules'] == 250
    assert counts['shards'] == 8 and len(manifest['shards']) == 8
    assert sum(s['num_molecules'] for s in manifest['shards']) == 250
    assert [s['first_record'] for s in manifest['shards']] == list(
        range(0, 254, SHARD_SIZE))
    assert manifest['settings']['seed'] == 0
    assert manifest['settings']['shard_size'] == SHARD_SIZE
    assert {'rdkit', 'numpy', 'h5py', 'pyg_unimol2'} <= set(
        manifest['versions'])
    assert [i['records'] for i in manifest['inputs']] == [152, 102]

    with open(out / 'failures.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    got = {(Path(r['file']).name, int(r['line'])): r for r in rows}
    expected = {('mols.smi', k): v for k, v in BROKEN_SMI.items()}
    expected.update({('mols.csv.gz', k): v for k, v in BROKEN_CSV.items()})
    assert set(got) == set(expected)
    for key, smiles in expected.items():
        assert got[key]['smiles'] == smiles
        assert repr(smiles) in got[key]['reason']

    reader = StoreReader(out)
    assert len(reader) == 250
    num_atoms, scaffold_id = reader.num_atoms, reader.scaffold_id
    scaffolds = [reader.scaffold_smiles(i) for i in range(250)]
    smiles = [reader.read_raw(i)['smiles'] for i in range(250)]
    assert scaffolds == [murcko_scaffold(s) for s in smiles]
    # Dense ids by first appearance, one per distinct scaffold.
    first = {}
    for s in scaffolds:
        first.setdefault(s, len(first))
    assert scaffold_id.tolist() == [first[s] for s in scaffolds]
    assert reader.scaffold_count.sum() == 250
    assert np.array_equal(np.bincount(scaffold_id), reader.scaffold_count)
    moses = read_moses(250)
    assert smiles == moses  # input order, failures skipped
    for i in (0, 77, 249):
        assert reader.get(i).num_nodes == num_atoms[i]
    assert reader.get(5).name == 'moses_5'
    assert reader.get(200).name == 'id50'


def test_molecules_match_from_smiles(store):
    out, _ = store
    reader = StoreReader(out)
    for i in range(0, 250, 25):
        data = reader.get(i)
        expected = from_smiles(data.smiles)
        assert set(data.keys()) == set(expected.keys())
        for key in expected.keys():
            if key == 'name':
                continue
            value = expected[key]
            if isinstance(value, torch.Tensor):
                assert data[key].dtype == value.dtype, key
                assert torch.equal(data[key], value), key
                assert data[key].is_contiguous(), key
            else:
                assert data[key] == value, key
    with pytest.raises(IndexError):
        reader.get(250)


def test_rerun_does_no_work(store, inputs, capsys):
    out, _ = store
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = build_store(inputs, out, workers=2, shard_size=SHARD_SIZE,
                          progress=False)
    assert summary.built_shards == summary.built_records == 0
    assert summary.num_molecules == 250
    assert 'nothing to do' in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_other_settings_refused(store, inputs):
    out, _ = store
    with pytest.raises(StoreError, match=r'other inputs or settings '
                       r'\(seed 0 -> 1\)') as error:
        build_store(inputs, out, shard_size=SHARD_SIZE, seed=1,
                    progress=False)
    assert '\n' not in str(error.value)
    with pytest.raises(StoreError, match=r'\(the input files'):
        build_store(inputs[:1], out, shard_size=SHARD_SIZE, progress=False)


def test_shards_do_not_depend_on_workers(store, inputs, tmp_path):
    out, _ = store
    build_store(inputs, tmp_path, workers=1, shard_size=SHARD_SIZE,
                limit=40, progress=False, verbose=False)
    same = (tmp_path / 'shard_000000.h5').read_bytes()
    assert same == (out / 'shard_000000.h5').read_bytes()


def arrays(path: Path):
    with h5py.File(path, 'r') as f:
        return {key: f[key][()] for key in f}, dict(f.attrs)


def assert_same_store(a: Path, b: Path):
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name.endswith('.h5'):
            arrays_a, attrs_a = arrays(a / name)
            arrays_b, attrs_b = arrays(b / name)
            assert attrs_a == attrs_b
            assert arrays_a.keys() == arrays_b.keys()
            for key in arrays_a:
                assert np.array_equal(arrays_a[key], arrays_b[key]), \
                    (name, key)
        # Byte for byte as well: HDF5 files are written deterministically.
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_killed_build_resumes_to_identical_store(store, inputs, tmp_path):
    out, _ = store
    resumed = tmp_path / 'store'
    script = (f'import sys; sys.path.insert(0, {str(ROOT)!r}); '
              f'from pyg_unimol2.data.store import build_store; '
              f'build_store({[str(p) for p in inputs]!r}, {str(resumed)!r}, '
              f'workers=2, shard_size={SHARD_SIZE}, progress=False)')
    proc = subprocess.Popen([sys.executable, '-c', script],
                            start_new_session=True,
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (resumed / 'shard_000000.h5').exists():
            assert proc.poll() is None, 'build ended before the first shard'
            assert time.monotonic() < deadline, 'no shard after 300 s'
            time.sleep(0.05)
    finally:  # Kill the build and its worker processes.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (resumed / 'manifest.json').exists(), 'build was not cut'
    done = sorted(p.name for p in resumed.glob('shard_*.h5'))
    assert 0 < len(done) < 8
    # A half-written next shard, as a kill during its write leaves it.
    (resumed / f'shard_{len(done):06d}.h5.tmp').write_bytes(b'\x89HDF\r\n')

    summary = build_store(inputs, resumed, workers=2, shard_size=SHARD_SIZE,
                          progress=False, verbose=False)
    assert summary.built_shards == 8 - len(done)
    assert not list(resumed.glob('*.tmp'))
    for name in done:  # finished shards were kept
        assert (resumed / name).stat().st_mtime_ns < (
            resumed / 'manifest.json').stat().st_mtime_ns
    assert_same_store(out, resumed)


def test_cli_build_hdf5(tmp_path, capsys):
    smi = tmp_path / 'in.smi'
    smi.write_text('CCO ethanol\nC1CC\nc1ccccc1O phenol\nCC(=O)O\n')
    out = tmp_path / 'cli_store'
    main(['build-hdf5', str(smi), str(out), '--workers', '1',
          '--shard-size', '2', '--no-progress'])
    printed = capsys.readouterr().out
    assert 'mol/s' in printed and '3 molecules in 2 shards' in printed
    assert "in.smi:2: unparsable SMILES: 'C1CC'" in printed
    reader = StoreReader(out)
    assert [reader.get(i).name for i in range(3)] == ['ethanol', 'phenol', '']
    main(['build-hdf5', str(smi), str(out), '--shard-size', '2'])
    assert 'nothing to do' in capsys.readouterr().out


def test_incomplete_store_is_not_readable(tmp_path):
    with pytest.raises(StoreError, match='not a complete store'):
        StoreReader(tmp_path)
