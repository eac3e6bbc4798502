"""Stores built from structures with energies and forces: every format in,
the labels intact, the read-back Data equal to geometry_to_data, bad records
reported and skipped, checksums over the labels, resumable builds."""
import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from geometry_files import FILES_BY_FORMAT, Expected, molecule, write_all
from torch_geometric.data import Batch

from pyg_unimol2.cli import main
from pyg_unimol2.data.formats import read_geometries
from pyg_unimol2.data.geometry import (BOHR_ANGSTROM, HARTREE_EV,
                                       check_geometry, geometry_to_data)
from pyg_unimol2.data.store import (LABELS, CorruptStoreError, StoreError,
                                    StoreReader, build_geometry_store,
                                    build_store)
from pyg_unimol2.data.store.build_geometry import group_key
from pyg_unimol2.data.store.format import LAYOUT_COLUMNS
from pyg_unimol2.datasets.hdf5 import HDF5MoleculeDataset

SHARD = 16


def _add_bad_records(folder: Path, expected: dict) -> dict:
    """Appends records that must fail (name -> part of the reason) and one
    good conformer beside a bad one (added to :obj:`expected`)."""
    rng = np.random.default_rng(7)
    bad = {}
    path = folder / FILES_BY_FORMAT['ani1x']
    with h5py.File(path, 'a') as f:
        m = molecule('CCO', 1)  # forces of one atom too many
        g = f.create_group('C2H6O')
        g['atomic_numbers'], g['coordinates'] = m.z, m.pos
        g['wb97x_dz.energy'] = [-155.0]
        g['wb97x_dz.forces'] = rng.normal(size=(1, m.z.shape[0] + 1, 3))
        bad[f'{path.name}:C2H6O/0'] = 'do not match coordinates'
        m = molecule('CO', 2)  # conformer 0 NaN, conformer 1 fine
        g = f.create_group('CH4O')
        g['atomic_numbers'], g['coordinates'] = m.z, m.pos
        g['wb97x_dz.energy'] = energy = np.array([np.nan, -115.0])
        g['wb97x_dz.forces'] = forces = rng.normal(size=(2, m.z.shape[0], 3))
        bad[f'{path.name}:CH4O/0'] = 'non-finite energy'
        expected['ani1x'][f'{path.name}:CH4O/1'] = Expected(
            m.z, m.pos[1], energy[1] * HARTREE_EV, forces[1] * HARTREE_EV)
        m = molecule('C=O', 1)  # element 0
        g = f.create_group('CH2O')
        g['atomic_numbers'] = np.where(m.z == 8, 0, m.z)
        g['coordinates'], g['wb97x_dz.energy'] = m.pos, [-114.0]
        g['wb97x_dz.forces'] = rng.normal(size=(1, m.z.shape[0], 3))
        bad[f'{path.name}:CH2O/0'] = 'atomic numbers [0] outside 1..118'
    path = folder / FILES_BY_FORMAT['spice']
    with h5py.File(path, 'a') as f:
        for name, z_bad, reason in (('1', None, 'non-finite forces'),
                                    ('2', 200, '[200] outside')):
            m = molecule('CCN', 1)
            g = f.create_group(name)
            g.create_dataset('smiles', data=[m.smiles],
                             dtype=h5py.string_dtype())
            g['atomic_numbers'] = m.z if z_bad is None else \
                np.where(m.z == 7, z_bad, m.z)
            g['conformations'] = m.pos / BOHR_ANGSTROM
            g['dft_total_energy'] = [-135.0]
            gradient = rng.normal(size=(1, m.z.shape[0], 3))
            if z_bad is None:
                gradient[0, 2, 1] = np.nan
            g['dft_total_gradient'] = gradient
            bad[f'{path.name}:{name}/0'] = reason
    import ase.io
    from ase import Atoms
    path = folder / FILES_BY_FORMAT['ase']
    m = molecule('CC', 1)
    ase.io.write(path, Atoms(numbers=m.z, positions=m.pos[0],
                             cell=[12.0, 12.0, 12.0], pbc=True),
                 format='extxyz', append=True)
    bad[f'{path.name}:{len(expected["ase"])}'] = 'has a unit cell'
    return bad


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('structures')
    expected = write_all(folder)
    bad = _add_bad_records(folder, expected)
    good = {k: v for e in expected.values() for k, v in e.items()}
    paths = [folder / FILES_BY_FORMAT[f] for f in expected]
    return paths, good, bad


@pytest.fixture(scope='module')
def store(inputs, tmp_path_factory):
    paths, _, _ = inputs
    out = tmp_path_factory.mktemp('store') / 'store'
    summary = build_geometry_store(paths, out, shard_size=SHARD, workers=2,
                                   progress=False, verbose=False)
    return out, summary


def _records(paths):
    return [r for p in paths for r in read_geometries(p)]


def test_bad_records_are_reported_and_skipped(store, inputs):
    out, summary = store
    paths, good, bad = inputs
    assert summary.num_records == len(good) + len(bad)
    assert (summary.num_molecules, summary.num_failures) == (len(good),
                                                             len(bad))
    with open(out / 'failures.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert {r['name'] for r in rows} == set(bad)
    by_name = {p.name: str(p) for p in paths}
    for row in rows:
        assert bad[row['name']] in row['reason'], row
        assert repr(row['name']) in row['reason']  # the record, named
        assert row['file'] == by_name[row['name'].split(':')[0]]
    reader = StoreReader(out)
    names = [reader.read_raw(i)['name'] for i in range(len(reader))]
    assert sorted(names) == sorted(good) and not set(names) & set(bad)


def test_labels_survive_the_round_trip(store, inputs):
    out, _ = store
    _, good, _ = inputs
    reader = StoreReader(out)
    for i in range(len(reader)):
        data = reader.get(i)
        e = good[data.name]
        assert torch.equal(data.z, torch.from_numpy(e.z).long()), data.name
        torch.testing.assert_close(data.pos, torch.from_numpy(
            e.pos).float(), rtol=0, atol=1e-6)
        assert data.energy.dtype == torch.float64
        assert data.energy.item() == pytest.approx(e.energy, rel=1e-9)
        assert data.forces.dtype == torch.float32
        np.testing.assert_allclose(data.forces.numpy(), e.forces,
                                   rtol=1e-6, atol=1e-6)
        assert data.charge.tolist() == [e.charge], data.name
        assert not data.has_graph.item()


def assert_same_data(data, expected):
    assert set(data.keys()) == set(expected.keys())
    for key in expected.keys():
        value = expected[key]
        if isinstance(value, torch.Tensor):
            assert data[key].dtype == value.dtype, key
            assert torch.equal(data[key], value), key
        else:
            assert data[key] == value, key


def test_read_back_equals_geometry_to_data(store, inputs):
    out, _ = store
    paths, _, bad = inputs
    records = [r for r in _records(paths) if r.name not in bad]
    reader = StoreReader(out)
    assert len(records) == len(reader)
    for i, record in enumerate(records):  # input order
        assert_same_data(reader.get(i), geometry_to_data(record))


def test_manifest_and_dataset(store, inputs):
    out, _ = store
    _, good, _ = inputs
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['labels'] == list(LABELS)
    counts = manifest['counts']
    assert counts['with_energy'] == counts['with_forces'] == len(good)
    assert manifest['settings']['graph'] == 'dropped'
    assert manifest['settings']['formats'] == ['ani1x', 't1x', 'spice',
                                               'rmd17', 'md22', 'ase']
    assert [s['first_record'] for s in manifest['shards']] == list(
        range(0, counts['records'], SHARD))
    dataset = HDF5MoleculeDataset(out)
    assert dataset.reader.labels == LABELS
    batch = Batch.from_data_list([dataset[0], dataset[len(dataset) - 1]])
    assert batch.energy.shape == (2, ) and batch.charge.shape == (2, )
    assert batch.forces.shape == (batch.num_nodes, 3)


def test_validation_split_holds_out_groups(store):
    out, _ = store
    parts = {}
    for split in ('train', 'valid'):
        dataset = HDF5MoleculeDataset(out, split=split, valid_fraction=0.5)
        assert len(dataset) > 0
        for i in range(len(dataset)):
            parts.setdefault(group_key(dataset[i].name), set()).add(split)
    assert all(len(p) == 1 for p in parts.values())  # no group straddles
    reactions = [k for k in parts if k.startswith('Transition1x.h5:')]
    assert len(reactions) == 3  # reactant, product and path together
    frames = [k for k in parts if k.startswith('rmd17_aspirin.npz:')]
    assert len(frames) == 4  # frames without a group: one key each


def test_perceived_bonds(inputs, tmp_path):
    paths, _, _ = inputs
    chosen = [p for p in paths if p.name.startswith(('rmd17', 'SPICE'))]
    summary = build_geometry_store(chosen, tmp_path / 'bonds',
                                   perceive_bonds=True, workers=1,
                                   progress=False, verbose=False)
    reader = StoreReader(tmp_path / 'bonds')
    records = [r for r in _records(chosen) if _valid(r)]
    assert summary.num_molecules == len(records) == len(reader)
    for i, record in enumerate(records):
        data = reader.get(i)
        assert data.has_graph.item() and data.edge_index.shape[1] > 0
        assert_same_data(data, geometry_to_data(record, perceive_bonds=True))
    charges = {reader.get(i).charge.item() for i in range(len(reader))}
    assert charges == {0, -1}  # SPICE's acetate


def _valid(record) -> bool:
    try:
        check_geometry(record)
    except ValueError:
        return False
    return True


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('column,size', [('forces', 12), ('energy', 8),
                                         ('charge', 2), ('has_graph', 1)])
def test_checksums_cover_the_labels(store, tmp_path, column, size):
    out = Path(shutil.copytree(store[0], tmp_path / 'store'))
    with h5py.File(out / 'index.h5', 'r') as f:
        first = int(f['shard_ptr'][1])
        layout = f['layout'][1]
    offset = int(layout[LAYOUT_COLUMNS.index(column)])
    with h5py.File(out / 'shard_000001.h5', 'r') as f:
        unit = int(f['ptr'][3, 0]) if column == 'forces' else 3
    _flip(out / 'shard_000001.h5', offset + size * unit + min(size - 1, 1))
    reader = StoreReader(out)
    for i in range(len(reader)):
        if i == first + 3:
            with pytest.raises(CorruptStoreError,
                               match='checksum mismatch') as error:
                reader.get(i)
            assert error.value.molecules == range(i, i + 1)
        else:
            reader.get(i)


def test_resumed_build_equals_an_uninterrupted_one(store, inputs, tmp_path):
    out, summary = store
    paths, _, _ = inputs
    resumed = tmp_path / 'store'
    build_geometry_store(paths, resumed, shard_size=SHARD, workers=1,
                         progress=False, verbose=False)
    last = f'shard_{summary.num_shards - 1:06d}.h5'
    for name in (last, 'manifest.json', 'index.h5', 'failures.csv'):
        (resumed / name).unlink()  # as a build killed in its last shard
    (resumed / f'{last}.tmp').write_bytes(b'\x89HDF\r\n')
    again = build_geometry_store(paths, resumed, shard_size=SHARD,
                                 workers=2, progress=False, verbose=False)
    assert again.built_shards == 1 and not list(resumed.glob('*.tmp'))
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in resumed.iterdir())
    for name in names:
        assert (out / name).read_bytes() == (resumed / name).read_bytes(), \
            name


def test_rerun_does_no_work_and_other_settings_are_refused(store, inputs,
                                                           capsys):
    out, _ = store
    paths, _, _ = inputs
    summary = build_geometry_store(paths, out, shard_size=SHARD,
                                   progress=False)
    assert summary.built_shards == 0 and 'nothing to do' in \
        capsys.readouterr().out
    with pytest.raises(StoreError, match='perceive_bonds False -> True'):
        build_geometry_store(paths, out, shard_size=SHARD,
                             perceive_bonds=True, progress=False)


def test_smiles_stores_have_no_labels(tmp_path):
    (tmp_path / 'in.smi').write_text('CCO\nc1ccccc1\n')
    build_store(tmp_path / 'in.smi', tmp_path / 'store', workers=1,
                optimize=False, progress=False, verbose=False)
    reader = StoreReader(tmp_path / 'store')
    assert reader.labels == () and 'energy' not in reader.get(0)
    assert json.loads((tmp_path / 'store' / 'manifest.json').read_text())[
        'labels'] == []


def test_cli(inputs, tmp_path, capsys):
    paths, good, _ = inputs
    chosen = [p for p in paths if p.suffix == '.npz']
    out = tmp_path / 'cli'
    main(['build-hdf5', '--format', 'auto', *map(str, chosen), str(out),
          '--workers', '1', '--shard-size', '3', '--no-progress'])
    printed = capsys.readouterr().out
    assert '8 structures in 3 shards, 0 failures; featurized 8 records' in \
        printed
    reader = StoreReader(out)
    assert reader.get(0).name == 'rmd17_aspirin.npz:0'
    missing = tmp_path / 'rmd17_broken.npz'
    np.savez(missing, nuclear_charges=np.array([6, 1]))
    for argv, message in (
            ([str(missing), str(tmp_path / 'x')],
             f"{missing}: no 'coords'"),
            (['in.smi', str(tmp_path / 'y'), '--level', 'wb97x_tz'],
             '--level, --split and --perceive-bonds apply to structure'),
            ([str(missing), str(tmp_path / 'z'), '--format', 'rmd17',
              '--seed', '3'], '--seed, --limit and --no-optimize apply'),
            ([str(missing), str(tmp_path / 'w'), '--split', 'train'],
             "option 'split' is taken by no input format (rmd17)")):
        if '--format' not in argv and argv[0] != 'in.smi':
            argv = argv + ['--format', 'rmd17']
        with pytest.raises(SystemExit) as exit_:
            main(['build-hdf5', *argv, '--no-progress'])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
