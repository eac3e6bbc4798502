"""Damaged stores: flipped bytes and truncated files are detected on read,
named (file and molecules), skipped by pretraining and fatal with
``strict``."""
import shutil
import warnings
from pathlib import Path
from typing import Set

import h5py
import numpy as np
import pytest
from conftest import read_moses

from pyg_unimol2.data.store import (CorruptStoreError, StoreError,
                                    StoreReader, build_store)
from pyg_unimol2.datasets.hdf5 import HDF5MoleculeDataset
from pyg_unimol2.pretrain import PretrainConfig
from pyg_unimol2.pretrain.trainer import pretrain

SHARD = 60  # 120 molecules, 2 shards


@pytest.fixture(scope='module')
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('integrity')
    (root / 'in.smi').write_text('\n'.join(read_moses(120)) + '\n')
    build_store(root / 'in.smi', root / 'store', workers=1, shard_size=SHARD,
                optimize=False, progress=False, verbose=False)
    return root / 'store'


@pytest.fixture
def store(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / 'store'))


def _flip(path: Path, start: int, length: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, start + length):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _touched(store: Path, shard: int, start: int, stop: int) -> Set[int]:
    """Store indices of the molecules of :obj:`shard` with a stored byte
    (or checksum) in ``[start, stop)`` of its file (all of them if the
    ``ptr`` table is hit), from the undamaged layout."""
    with h5py.File(store / 'index.h5', 'r') as f:
        layout = f['layout'][shard]
        first = int(f['shard_ptr'][shard])
    with h5py.File(store / f'shard_{shard:06d}.h5', 'r') as f:
        ptr = f['ptr'][:]
    m = ptr.shape[0] - 1

    def hit(lo: int, hi: int) -> bool:
        return lo < stop and start < hi

    if hit(layout[0], layout[0] + ptr.nbytes):
        return set(range(first, first + m))
    sizes = {1: 1, 2: 12, 3: 2, 4: 1, 5: 1}  # bytes per ptr unit
    columns = {1: 3, 2: 0, 3: 2, 4: 4, 5: 5}  # layout column -> ptr column
    found = set()
    for j in range(m):
        if hit(layout[6] + 4 * j, layout[6] + 4 * j + 4):
            found.add(first + j)
        for c, pc in columns.items():
            lo = layout[c] + sizes[c] * ptr[j, pc]
            hi = layout[c] + sizes[c] * ptr[j + 1, pc]
            if hi > lo and hit(lo, hi):
                found.add(first + j)
    return found


def _failures(root: Path) -> dict:
    reader = StoreReader(root)
    out = {}
    for i in range(len(reader)):
        try:
            reader.get(i)
        except CorruptStoreError as e:
            out[i] = e
    return out


def test_clean_store_reads_every_molecule(pristine):
    assert _failures(pristine) == {}


def test_flipped_4kib_names_shard_and_exactly_the_molecules_hit(store):
    path = store / 'shard_000001.h5'
    middle = path.stat().st_size // 2
    _flip(path, middle, 4096)
    expected = _touched(store, 1, middle, middle + 4096)
    assert expected  # the middle of a shard holds molecule bytes
    failures = _failures(store)
    assert set(failures) == expected
    for index, error in failures.items():
        assert error.path == path and index in error.molecules
        assert 'checksum mismatch' in str(error) and str(path) in str(error)
        assert f'store molecule {index} ' in str(error)


def test_one_flipped_coordinate_byte_fails_only_its_molecule(store):
    with h5py.File(store / 'index.h5', 'r') as f:
        pos_offset = int(f['layout'][0, 2])
    with h5py.File(store / 'shard_000000.h5', 'r') as f:
        atom = int(f['ptr'][7, 0])  # first atom of molecule 7
    _flip(store / 'shard_000000.h5', pos_offset + 12 * atom + 5, 1)
    assert list(_failures(store)) == [7]


def test_damaged_molecule_table_fails_its_whole_shard(store):
    with h5py.File(store / 'index.h5', 'r') as f:
        ptr_offset = int(f['layout'][1, 0])
    _flip(store / 'shard_000001.h5', ptr_offset + 100, 1)
    failures = _failures(store)
    assert sorted(failures) == list(range(SHARD, 2 * SHARD))
    error = failures[SHARD]
    assert error.molecules == range(SHARD, 2 * SHARD)
    assert f'store molecules {SHARD}..{2 * SHARD - 1}' in str(error)


def test_truncated_shard_names_the_molecules_cut_off(store):
    path = store / 'shard_000001.h5'
    data = path.read_bytes()
    with h5py.File(store / 'index.h5', 'r') as f:
        smiles_offset = int(f['layout'][1, 4])
    with h5py.File(path, 'r') as f:
        smiles_end = smiles_offset + int(f['ptr'][-1, 4])
    cut = smiles_end - 50  # inside the SMILES of the last molecules
    expected = _touched(store, 1, cut, len(data))
    path.write_bytes(data[:cut])
    failures = _failures(store)
    assert set(failures) == expected and 0 < len(expected) < 5
    assert all('truncated shard file' in str(e) for e in failures.values())
    path.write_bytes(data[:100])  # even the molecule table is gone
    failures = _failures(store)
    assert sorted(failures) == list(range(SHARD, 2 * SHARD))


@pytest.mark.parametrize('damage', ['truncate', 'flip'])
def test_damaged_index_is_named_on_open(store, damage):
    path = store / 'index.h5'
    if damage == 'truncate':
        path.write_bytes(path.read_bytes()[:500])
    else:
        _flip(path, path.stat().st_size // 2, 1)
    with pytest.raises(StoreError, match='index.h5'):
        StoreReader(store)


def test_dataset_skips_damaged_molecules_when_asked(store):
    _flip(store / 'shard_000000.h5', 4096, 4096)
    with pytest.raises(CorruptStoreError):
        [HDF5MoleculeDataset(store)[i] for i in range(SHARD)]
    dataset = HDF5MoleculeDataset(store, on_corrupt='skip')
    with pytest.warns(UserWarning, match='shard_000000.h5'):
        items = [dataset[i] for i in range(len(dataset))]
    bad = [i for i, item in enumerate(items) if item is None]
    assert bad and dataset.corrupt_skipped == len(bad)
    assert set(bad) == set(_failures(store))
    assert all(items[i].num_nodes > 0 for i in range(SHARD, 2 * SHARD))


def _config(store: Path, out: Path, **kwargs) -> PretrainConfig:
    return PretrainConfig(
        store=str(store), out=str(out), preset='tiny', max_steps=6,
        warmup_steps=2, lr=5e-4, max_tokens=400, valid_fraction=0.1,
        valid_every=3, ckpt_every=3, progress=False, threads=1, **kwargs)


def test_pretraining_reports_skips_and_continues_or_stops_if_strict(
        store, tmp_path):
    _flip(store / 'shard_000001.h5', 4096, 8192)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        result = pretrain(_config(store, tmp_path / 'run'))
    assert np.isfinite(result['loss']) and result['skipped_steps'] == 0
    skipped = [str(w.message) for w in caught
               if 'shard_000001.h5' in str(w.message)]
    assert skipped and all('checksum mismatch' in m for m in skipped)
    with pytest.raises(CorruptStoreError, match='shard_000001.h5'):
        pretrain(_config(store, tmp_path / 'strict', strict=True))


def test_pretraining_on_a_store_with_nothing_readable_stops(store, tmp_path):
    for shard in ('shard_000000.h5', 'shard_000001.h5'):
        path = store / shard
        path.write_bytes(path.read_bytes()[:100])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(StoreError, match='no molecule'):
            pretrain(_config(store, tmp_path / 'run'))
