"""QM9 dataset on real data: qm9pack subsets and a synthetic official archive
re-serialized from qm9pack entries."""
import importlib.util
import io
import os
import os.path as osp
import tarfile
import time

import numpy as np
import pytest
import torch
from conftest import mol_from_data
from rdkit import Chem

if importlib.util.find_spec('qm9pack') is None:
    pytest.skip('qm9pack not installed', allow_module_level=True)
pd = pytest.importorskip('pandas')

from pyg_unimol2.datasets import load_property_dataset  # noqa: E402
from pyg_unimol2.datasets.qm9 import (QM9, QM9_TARGETS,  # noqa: E402
                                      parse_qm9_xyz, read_qm9_archive,
                                      read_qm9pack, read_report)

N = 300
SYMBOL = {'H': 1, 'C': 6, 'N': 7, 'O': 8, 'F': 9}
RAW_COLUMNS = {  # qm9pack CSV column of every target
    'mu': 'Dipole_debye', 'alpha': 'Polarizability_bohr3', 'homo': 'HOMO_au',
    'lumo': 'LUMO_au', 'gap': 'HOMO_LUMO_gap_au', 'r2': 'R2_bohr2',
    'zpve': 'ZPVE_au', 'u0': 'InternalEnergy_0K_au',
    'u298': 'InternalEnergy_298K_au', 'h298': 'Enthalphy_298K_au',
    'g298': 'GibbsFreeEnergy_298K_au', 'cv': 'Heatcapacity_Cv_cal_mol_K'}


def _qm9pack_csv(part: int) -> str:
    spec = importlib.util.find_spec('qm9pack')
    return osp.join(list(spec.submodule_search_locations)[0], 'data',
                    f'qm9_part{part}.csv')


def _parse_list(s):
    return s.replace('[', '').replace(']', '').replace("'", '').split(',')


@pytest.fixture(scope='module')
def raw():
    """The raw qm9pack rows: first N of part 1 and the last 100 of part 3
    (with GDB 133857, whose graph cannot be matched), parsed here."""
    df = pd.concat([
        pd.read_csv(_qm9pack_csv(1), nrows=N),
        pd.read_csv(_qm9pack_csv(3), skiprows=range(1, 43512)),
    ], ignore_index=True)
    return {int(r['Index']): r for _, r in df.iterrows()}


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp('qm9')
    return QM9(str(root), subset=N, workers=2, progress=False)


def _xyz(row):
    z = np.array([SYMBOL[e] for e in _parse_list(row['Elements'])])
    pos = np.array(_parse_list(row['XYZ_Ang']), float).reshape(-1, 3)
    return z, pos


def test_count_and_identity(ds, raw):
    assert len(ds) == N
    first = ds[0]
    assert first.name == 'dsgdb9nsd_000001' and first.smiles == 'C'
    assert first.idx.tolist() == [1]
    gdb = [int(i) for i in ds._data.idx]
    assert gdb == sorted(raw)[:N]  # first N molecules, GDB order
    assert ds.y.shape == (N, 12) and ds.y.dtype == torch.float32
    assert bool(ds._data.has_graph.all())
    assert osp.basename(ds.processed_paths[0]) == \
        'qm9_qm9pack_noH_first300_v1.pt'


def test_methane_targets_in_raw_units(ds):
    # Values of dsgdb9nsd_000001.xyz (property line of the official file).
    y = ds[0].y[0]
    expect = {'mu': 0.0, 'alpha': 13.21, 'homo': -0.3877, 'lumo': 0.1171,
              'gap': 0.5048, 'r2': 35.3641, 'zpve': 0.044749,
              'u0': -40.47893, 'u298': -40.476062, 'h298': -40.475117,
              'g298': -40.498597, 'cv': 6.469}
    for name, value in expect.items():
        assert y[QM9_TARGETS[name].index].item() == pytest.approx(
            value, abs=1e-5), name
    assert [t.index for t in QM9_TARGETS.values()] == list(range(12))
    assert QM9_TARGETS['homo'].unit == 'Ha'
    assert QM9_TARGETS['cv'].unit == 'cal/(mol K)'


def test_targets_equal_raw_source(ds, raw):
    for data in ds:
        row = raw[int(data.idx)]
        for name, target in QM9_TARGETS.items():
            want = float(row[RAW_COLUMNS[name]])
            assert data.y[0, target.index].item() == pytest.approx(
                want, rel=1e-6, abs=1e-6), (int(data.idx), name)
    y = ds.y
    homo, lumo, gap = (y[:, QM9_TARGETS[k].index] for k in
                       ('homo', 'lumo', 'gap'))
    # Hartree, not eV: gap = lumo - homo to the 4 printed decimals.
    assert torch.allclose(gap, lumo - homo, atol=1.5e-4)
    assert -0.30 < homo.mean().item() < -0.20
    assert bool((homo < -0.1).all() and (homo > -0.5).all())


def test_pos_and_atoms_are_dft_heavy_atoms(ds, raw):
    for data in ds:
        z, pos = _xyz(raw[int(data.idx)])
        heavy = z != 1
        assert data.z.tolist() == z[heavy].tolist()
        assert torch.allclose(data.pos, torch.tensor(pos[heavy],
                                                     dtype=torch.float32))


def test_graph_equals_smiles_graph(ds):
    for data in ds:
        got = Chem.MolToSmiles(mol_from_data(data), isomericSmiles=False)
        want = Chem.MolToSmiles(Chem.MolFromSmiles(data.smiles),
                                isomericSmiles=False)
        assert got == want, data.name


def test_cached_reopen_does_not_reprocess(ds, monkeypatch):
    path = ds.processed_paths[0]
    mtime = os.stat(path).st_mtime_ns

    def fail(self):
        raise AssertionError('reprocessed')

    monkeypatch.setattr(QM9, 'process', fail)
    t0 = time.perf_counter()
    again = QM9(ds.root, subset=N)
    assert time.perf_counter() - t0 < 5
    assert os.stat(path).st_mtime_ns == mtime
    assert len(again) == N
    assert torch.equal(again.y, ds.y)


def test_options_select_other_files(ds, raw):
    with_h = QM9(ds.root, subset=20, remove_hs=False, workers=1,
                 progress=False)
    assert osp.basename(with_h.processed_paths[0]) == \
        'qm9_qm9pack_H_first20_v1.pt'
    z, pos = _xyz(raw[int(with_h[5].idx)])
    assert with_h[5].z.tolist() == z.tolist()
    assert torch.allclose(with_h[5].pos, torch.tensor(pos).float())
    files = set(os.listdir(ds.processed_dir))
    assert {'qm9_qm9pack_noH_first300_v1.pt',
            'qm9_qm9pack_H_first20_v1.pt'} <= files


def test_random_subset_is_seeded(tmp_path):
    a, names, units = load_property_dataset(
        'qm9', str(tmp_path), ['gap', 'homo'], subset=40, seed=3, workers=1,
        progress=False)
    assert names == ['gap', 'homo'] and units == {'gap': 'Ha', 'homo': 'Ha'}
    assert osp.basename(a.processed_paths[0]) == \
        'qm9_qm9pack_noH_rand40s3_v1.pt'
    assert a.root == str(tmp_path / 'qm9')
    full_y = a._data.y
    for k, data in enumerate(a):  # y restricted to [gap, homo]
        assert data.y.shape == (1, 2)
        assert torch.equal(data.y[0], full_y[k, [4, 2]])
    with pytest.raises(ValueError, match='unknown qm9 targets'):
        load_property_dataset('qm9', str(tmp_path), ['HOMO'])
    # Independently: 40 positions drawn with numpy's default_rng(3) among
    # the 130,831 molecules in GDB order.
    index = pd.concat([pd.read_csv(_qm9pack_csv(k), usecols=['Index'])
                       for k in (1, 2, 3)])['Index'].to_numpy()
    assert len(index) == 130831
    pick = np.sort(np.random.default_rng(3).choice(len(index), 40,
                                                   replace=False))
    assert a._data.idx.tolist() == index[pick].tolist()
    assert max(a._data.idx.tolist()) > 1000  # not the first 40


# --------------------------------------------------------------------------
# Official archive, synthesized from qm9pack rows in the official format
# --------------------------------------------------------------------------
def _fortran(value: float) -> str:
    """Mathematica/Fortran style number as in the official files."""
    mantissa, exponent = f'{value:.10e}'.split('e')
    return f'{mantissa}*^{int(exponent)}'


def _official_xyz(row, idx=None, relaxed=None) -> str:
    idx = int(row['Index']) if idx is None else idx
    el = _parse_list(row['Elements'])
    pos = np.array(_parse_list(row['XYZ_Ang']), float).reshape(-1, 3)
    charges = _parse_list(row['Mulliken_pop'])
    props = [row['RotA_GHz'], row['RotB_GHz'], row['RotC_GHz']] + \
        [row[c] for c in RAW_COLUMNS.values()]
    lines = [str(len(el)),
             'gdb ' + str(idx) + '\t' + '\t'.join(repr(float(v))
                                                  for v in props) + '\t']
    for k, (e, p, q) in enumerate(zip(el, pos, charges)):
        coords = [repr(float(c)) for c in p]
        if k == 0:  # exercise the *^ exponent notation
            coords = [_fortran(float(c)) for c in p]
        lines.append('\t'.join([e] + coords + [q]))
    lines.append('\t'.join(_parse_list(row['Harmonic_Freq_cmi'])))
    relaxed = relaxed or Chem.MolToSmiles(Chem.MolFromSmiles(row['SMILES']))
    lines.append(f"{row['SMILES']}\t{relaxed}")
    lines.append(f"{row['InChi']}\t{row['InChi']}")
    return '\n'.join(lines) + '\n'


@pytest.fixture(scope='module')
def archive(raw, tmp_path_factory):
    """A small ``dsgdb9nsd.xyz.tar.bz2``: GDB 1..40 (characterized ones),
    GDB 19 with a wrong relaxed SMILES (tautomer), GDB 133857 whose graph
    matches neither SMILES, and a copy of methane filed under an
    uncharacterized index."""
    present = sorted(i for i in raw if i <= 300)
    uncharacterized = min(set(range(1, 301)) - set(present))
    texts = {}
    for i in [i for i in present if i <= 40] + [133857]:
        relaxed = {19: 'CC(O)=N', 133857: raw[133857]['SMILES']}.get(i)
        texts[i] = _official_xyz(raw[i], relaxed=relaxed)
    texts[uncharacterized] = _official_xyz(raw[1], idx=uncharacterized)
    path = tmp_path_factory.mktemp('archive') / 'dsgdb9nsd.xyz.tar.bz2'
    with tarfile.open(path, 'w:bz2') as tar:
        for i, text in sorted(texts.items(), reverse=True):
            data = text.encode()
            info = tarfile.TarInfo(f'dsgdb9nsd_{i:06d}.xyz')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path), sorted(texts), uncharacterized


def test_parse_fortran_exponents(raw):
    rec = parse_qm9_xyz(_official_xyz(raw[1]))
    assert rec.idx == 1 and rec.smiles == 'C' and rec.smiles_relaxed == 'C'
    z, pos = _xyz(raw[1])
    assert rec.z.tolist() == z.tolist()
    assert np.allclose(rec.pos, pos, atol=1e-12, rtol=0)
    assert rec.y[QM9_TARGETS['homo'].index] == -0.3877
    assert '*^' in _official_xyz(raw[1])


def test_archive_parsing_equals_qm9pack(archive):
    path, indices, uncharacterized = archive
    recs = {r.idx: r for r in read_qm9_archive(path)}
    assert sorted(recs) == indices
    ref = {r.idx: r for r in read_qm9pack(limit=60)}
    for i, rec in recs.items():
        if i not in ref:
            continue
        assert rec.z.tolist() == ref[i].z.tolist()
        assert np.allclose(rec.pos, ref[i].pos, atol=1e-12, rtol=0)
        assert np.array_equal(rec.y, ref[i].y)
        assert rec.smiles == ref[i].smiles
    assert recs[19].smiles_relaxed == 'CC(O)=N'


def test_archive_dataset_and_failure_report(archive, ds, raw, tmp_path,
                                            capsys):
    path, indices, uncharacterized = archive
    arc = QM9(str(tmp_path), raw_archive=path, workers=1, progress=False)
    assert arc.source == 'archive'
    assert osp.basename(arc.processed_paths[0]) == \
        'qm9_archive_noH_all_v1.pt'
    assert 'without graph features' in capsys.readouterr().out
    gdb = arc._data.idx.tolist()
    assert gdb == [i for i in indices if i != uncharacterized]

    # Same molecules as from qm9pack (GDB 19 via the GDB-SMILES fallback).
    from_pack = {int(d.idx): d for d in ds}
    for data in arc:
        i = int(data.idx)
        if i in from_pack:
            ref = from_pack[i]
            for key in ('z', 'pos', 'y', 'atom_feat', 'edge_index', 'spd',
                        'pair_feat', 'has_graph'):
                assert torch.equal(data[key], ref[key]), (i, key)

    # The unmatched molecule is kept, graph features dropped, and reported.
    bad = arc[gdb.index(133857)]
    assert bad.has_graph.tolist() == [False]
    assert bool((bad.atom_feat == 1).all()) and bool((bad.spd == 511).all())
    z, pos = _xyz(raw[133857])
    assert bad.z.tolist() == z[z != 1].tolist()
    assert torch.allclose(bad.pos, torch.tensor(pos[z != 1]).float())
    assert bad.y[0, QM9_TARGETS['gap'].index].item() == pytest.approx(
        float(raw[133857]['HOMO_LUMO_gap_au']), abs=1e-6)
    report = {int(r['gdb_idx']): r for r in read_report(arc.report_path)}
    assert set(report) == {19, 133857}
    assert report[133857]['status'] == 'graph_dropped'
    assert int(report[133857]['index']) == gdb.index(133857)
    assert report[133857]['smiles'] == 'CC1C2C3C4=CCC13C24'
    assert 'relaxed:' in report[133857]['reason']
    assert 'gdb:' in report[133857]['reason']
    assert report[19]['status'] == 'fallback'
    assert bool(arc[gdb.index(19)].has_graph)

    # Uncharacterized molecules kept on request; archive found in raw/.
    allm = QM9(str(tmp_path), raw_archive=path, characterized_only=False,
               workers=1, progress=False)
    assert allm._data.idx.tolist() == indices
    os.makedirs(tmp_path / 'auto' / 'raw')
    os.symlink(path, tmp_path / 'auto' / 'raw' / 'dsgdb9nsd.xyz.tar.bz2')
    auto = QM9(str(tmp_path / 'auto'), workers=1, progress=False)
    assert auto.source == 'archive' and len(auto) == len(arc)


def test_missing_archive_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match='figshare'):
        QM9(str(tmp_path), source='archive', progress=False)
