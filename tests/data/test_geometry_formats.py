"""Readers of the energy/force dataset formats: files written in each
published layout read back in Angstrom, eV and eV/Angstrom; a missing key is
one error naming the file and the key."""
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from geometry_files import (FILES_BY_FORMAT, molecule, write_all,
                            write_ase_db, write_extxyz, write_md22)

from pyg_unimol2.data.formats import (READERS, detect_format,
                                      read_geometries)
from pyg_unimol2.data.geometry import (HARTREE_EV, GeometryError,
                                      check_geometry)
from pyg_unimol2.errors import ConfigError, InputError, UserError

FILES = FILES_BY_FORMAT


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('formats')
    expected = write_all(folder)
    expected['ase_db'] = write_ase_db(folder / 'structures.db')
    return folder, expected


def assert_records(records, expected):
    """The records are the expected ones, value for value (positions to
    float32 precision, energies to 1e-9 relative)."""
    assert len(records) == len(expected)
    assert {r.name for r in records} == set(expected)
    for r in records:
        e = expected[r.name]
        assert np.array_equal(r.z, e.z), r.name
        np.testing.assert_allclose(r.pos, e.pos, rtol=0, atol=1e-6)
        assert r.energy == pytest.approx(e.energy, rel=1e-9), r.name
        np.testing.assert_allclose(r.forces, e.forces, rtol=1e-6,
                                   atol=1e-6)
        assert r.charge == e.charge, r.name
        assert r.cell is None
        check_geometry(r)  # valid


@pytest.mark.parametrize('fmt', list(FILES) + ['ase_db'])
def test_reader_gives_back_the_file_in_library_units(files, fmt):
    folder, expected = files
    path = folder / (FILES.get(fmt) or 'structures.db')
    records = list(read_geometries(path))  # format from the name
    assert_records(records, expected[fmt])
    reader = READERS[fmt.split('_')[0]]
    assert [r.name for r in reader(path)] == [r.name for r in records]


def test_charges_come_from_the_smiles_and_from_ase(files):
    _, expected = files
    for fmt in ('spice', 'ase', 'ase_db'):
        charges = {e.charge for e in expected[fmt].values()}
        assert charges == {0, -1}, fmt  # neutral and acetate records


def test_ani1x_levels_of_theory(files):
    folder, _ = files
    path = folder / FILES['ani1x']
    with h5py.File(path, 'r') as f:
        formula = sorted(f)[0]
        tz = f[formula]['wb97x_tz.energy'][()] * HARTREE_EV
        tz_forces = f[formula]['wb97x_tz.forces'][()] * HARTREE_EV
    records = [r for r in read_geometries(path, level='wb97x_tz')
               if f':{formula}/' in r.name]
    assert [r.energy for r in records] == pytest.approx(tz, rel=1e-9)
    np.testing.assert_allclose(records[1].forces, tz_forces[1], rtol=1e-6)
    cc = list(read_geometries(path, level='ccsd(t)_cbs'))
    assert all(r.forces is None for r in cc)
    nan = [r for r in cc if r.name.endswith('/0')]
    assert nan and all(np.isnan(r.energy) for r in nan)
    with pytest.raises(GeometryError, match='non-finite energy') as error:
        check_geometry(nan[0])
    assert nan[0].name in str(error.value)


def test_t1x_splits(files):
    folder, expected = files
    path = folder / FILES['t1x']
    train = list(read_geometries(path, split='train'))
    test = list(read_geometries(path, split='test'))
    assert len(train) + len(test) == len(expected['t1x'])
    assert all(r.name.startswith('Transition1x.h5:train/') for r in train)
    assert {r.name.replace(':test/', ':data/') for r in test} | {
        r.name.replace(':train/', ':data/') for r in train} == set(
        expected['t1x'])
    # A reaction: its reactant, its product, then its path images.
    assert [r.name.split('/', 2)[-1] for r in train[:3]] == [
        'rxn0000/reactant', 'rxn0000/product', 'rxn0000/0']
    with pytest.raises(ConfigError, match='split'):
        list(read_geometries(path, split='validation'))


def test_md22_unit_fields(tmp_path):
    path = tmp_path / 'md22_DHA.npz'
    expected = write_md22(path, e_unit='eV', r_unit='au')
    assert_records(list(read_geometries(path)), expected)
    data = dict(np.load(path))
    data['e_unit'] = np.array('furlong')
    np.savez(path, **data)
    with pytest.raises(InputError, match=r"unknown e_unit 'furlong'") as e:
        list(read_geometries(path))
    assert str(path) in str(e.value)


def _drop_h5(path: Path, group: str, key: str) -> None:
    with h5py.File(path, 'a') as f:
        del f[group][key]


def _drop_npz(path: Path, key: str) -> None:
    data = dict(np.load(path))
    del data[key]
    np.savez(path, **data)


@pytest.mark.parametrize('fmt,key', [
    ('ani1x', 'wb97x_dz.forces'), ('ani1x', 'coordinates'),
    ('t1x', 'wB97x_6-31G(d).energy'), ('spice', 'dft_total_gradient'),
    ('spice', 'smiles'), ('rmd17', 'coords'), ('md22', 'F')])
def test_missing_key_is_one_error_naming_file_and_key(files, tmp_path, fmt,
                                                      key):
    folder, _ = files
    path = Path(shutil.copy(folder / FILES[fmt], tmp_path))
    if path.suffix == '.npz':
        _drop_npz(path, key)
    else:
        with h5py.File(path, 'r') as f:
            group = sorted(f)[-1] if fmt != 't1x' else \
                'data/' + sorted(f['data'])[0]
            if fmt == 't1x':
                group += '/' + sorted(f[group])[0] + '/product'
        _drop_h5(path, group, key)
    with pytest.raises(InputError) as error:
        list(read_geometries(path))
    message = str(error.value)
    assert isinstance(error.value, UserError)
    assert str(path) in message and f"'{key}'" in message
    assert '\n' not in message


def test_other_kinds_of_file_are_input_errors(files, tmp_path):
    folder, _ = files
    text = tmp_path / 'ani1x-release.h5'
    text.write_text('not hdf5\n')
    with pytest.raises(InputError, match='not an HDF5 file'):
        list(read_geometries(text))
    npz = tmp_path / 'rmd17_x.npz'
    npz.write_bytes(b'PK\x03\x04broken')
    with pytest.raises(InputError, match='not a NumPy .npz file'):
        list(read_geometries(npz))
    rmd17 = Path(shutil.copy(folder / FILES['rmd17'], tmp_path))
    data = dict(np.load(rmd17))
    data['energies'] = data['energies'][:-1]
    np.savez(rmd17, **data)
    with pytest.raises(InputError, match="conformer counts.*'energies' 3"):
        list(read_geometries(rmd17))


def test_format_from_the_file_name(tmp_path):
    assert [detect_format(p) for p in (
        'ani1x-release.h5', 'data/Transition1x.h5', 'SPICE-2.0.1.hdf5',
        'rmd17_ethanol.npz', 'md22_stachyose.npz', 'dataset.npz', 'a.db',
        'b.extxyz', 'c.xyz')] == ['ani1x', 't1x', 'spice', 'rmd17', 'md22',
                                  'md22', 'ase', 'ase', 'ase']
    with pytest.raises(InputError, match='cannot tell its format'):
        detect_format('mystery.h5')
    with pytest.raises(ConfigError, match="unknown structure format 'qm7'"):
        read_geometries('x.h5', 'qm7')
    with pytest.raises(ConfigError, match='takes no option level'):
        read_geometries('rmd17_x.npz', level='wb97x_dz')


def test_a_structure_with_a_cell_is_rejected_by_name(tmp_path):
    from ase import Atoms
    import ase.io

    m = molecule('CCO', 1)
    atoms = Atoms(numbers=m.z, positions=m.pos[0], cell=[10, 10, 10],
                  pbc=True)
    path = tmp_path / 'box.extxyz'
    ase.io.write(path, [atoms], format='extxyz')
    record, = read_geometries(path)
    assert record.cell is not None
    with pytest.raises(GeometryError, match="'box.extxyz:0'.*unit cell"):
        check_geometry(record)
    plain = write_extxyz(tmp_path / 'plain.xyz', count=1)  # .xyz: extxyz
    assert_records(list(read_geometries(tmp_path / 'plain.xyz')), plain)
