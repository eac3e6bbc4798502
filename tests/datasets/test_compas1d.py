"""COMPAS-1D dataset on the real B3LYP-D3BJ/def2-SVP CSV (read in place from
shared/, never copied into the repository)."""
import csv
import os
import os.path as osp
import re

import pytest
import torch
from conftest import COMPAS_CSV, mol_from_data
from rdkit import Chem

from pyg_unimol2.datasets import load_property_dataset
from pyg_unimol2.datasets.compas1d import COMPAS1D, COMPAS1D_TARGETS

N = 12
HELICENE = 23  # row of hc_c26h16_0pent_12 ([6]helicene): ETKDGv3 fails


@pytest.fixture(scope='module')
def rows():
    if not COMPAS_CSV.is_file():
        pytest.fail(f'COMPAS-1D CSV not found at {COMPAS_CSV}')
    with open(COMPAS_CSV, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp('compas')
    return COMPAS1D(str(root), csv_path=str(COMPAS_CSV), subset=N, workers=2,
                    progress=False)


def test_count_targets_and_units(ds, rows):
    assert len(rows) == 8678
    assert len(ds) == N
    assert ds.y.shape == (N, 8) and ds.y.dtype == torch.float32
    assert [t.index for t in COMPAS1D_TARGETS.values()] == list(range(8))
    for data in ds:
        i = int(data.idx)
        row = rows[i]
        assert data.name == row['molecule'] and data.smiles == row['smiles']
        assert int(data.n_rings) == int(row['n_rings'])
        for name, t in COMPAS1D_TARGETS.items():
            assert data.y[0, t.index].item() == pytest.approx(
                float(row[t.column]), abs=1e-6), (i, name)
    # Naphthalene, first row of the file (eV and Debye).
    naph = ds[0]
    assert naph.name == 'hc_c10h8_0pent_1'
    expect = {'aEA': 0.524, 'aIP': 7.734, 'dispersion': -0.991, 'dipmom': 0.0,
              'homo': -5.953, 'lumo': -1.172, 'gap': 4.781, 'erel': 0.0}
    for name, value in expect.items():
        assert naph.y[0, COMPAS1D_TARGETS[name].index].item() == \
            pytest.approx(value, abs=1e-6)


def test_aea_sign_convention(ds, rows):
    # aEA = E(anion) - E(neutral), aIP = E(cation) - E(neutral).
    for data in ds:
        row = rows[int(data.idx)]
        y = data.y[0]
        assert y[COMPAS1D_TARGETS['aEA'].index].item() == pytest.approx(
            float(row['Etot_neg_eV']) - float(row['Etot_eV']), abs=2e-3)
        assert y[COMPAS1D_TARGETS['aIP'].index].item() == pytest.approx(
            float(row['Etot_pos_eV']) - float(row['Etot_eV']), abs=2e-3)
    assert ds[0].y[0, 0] > 0  # naphthalene anion lies above the neutral


def test_graph_and_conformer(ds):
    from pyg_unimol2.data.featurize import from_smiles
    for data in ds:
        carbons = int(re.match(r'hc_c(\d+)h', data.name).group(1))
        assert data.z.tolist() == [6] * carbons
        assert data.pos.shape == (carbons, 3)
        assert bool(data.has_graph)
        assert Chem.MolToSmiles(mol_from_data(data)) == \
            Chem.MolToSmiles(Chem.MolFromSmiles(data.smiles))
        # A real 3D conformer: C-C bonds near 1.40 A.
        i, j = data.edge_index
        d = (data.pos[i] - data.pos[j]).norm(dim=-1)
        assert 1.3 < d.min() and d.max() < 1.5
    # Seeded: the conformer is the one from_smiles gives with seed 0.
    ref = from_smiles(ds[3].smiles, seed=0)
    assert torch.equal(ref.pos, ds[3].pos)


def test_cached_reopen_does_not_reprocess(ds, monkeypatch):
    mtime = os.stat(ds.processed_paths[0]).st_mtime_ns

    def fail(self):
        raise AssertionError('reprocessed')

    monkeypatch.setattr(COMPAS1D, 'process', fail)
    again = COMPAS1D(ds.root, csv_path=str(COMPAS_CSV), subset=N)
    assert len(again) == N and torch.equal(again.y, ds.y)
    assert os.stat(ds.processed_paths[0]).st_mtime_ns == mtime
    assert osp.basename(ds.processed_paths[0]) == \
        'compas1d_b3lyp_noH_first12_mmff_s0_v1.pt'


def test_failures_reported_not_fatal(rows, tmp_path, capsys):
    """A CSV built from real rows plus a broken SMILES and the [6]helicene
    row, read from root/raw/."""
    picked = [dict(rows[0]), dict(rows[1]), dict(rows[2]),
              dict(rows[HELICENE])]
    picked[2]['smiles'] = 'c1ccc2c(c1)ccc1'  # unparsable
    os.makedirs(tmp_path / 'raw')
    with open(tmp_path / 'raw' / 'compas-1D_b3lyp-d3bj_def2-svp.csv', 'w',
              newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    ds = COMPAS1D(str(tmp_path), workers=1, progress=False)
    assert ds._data.idx.tolist() == [0, 1, 3]
    assert ds[2].name == 'hc_c26h16_0pent_12'
    assert ds[2].z.numel() == 26
    with open(ds.report_path, newline='') as f:
        report = {int(r['index']): r for r in csv.DictReader(f)}
    assert set(report) == {2}  # the helicene is embedded, not reported
    assert report[2]['molecule'] == rows[2]['molecule']
    assert 'SMILES' in report[2]['reason']
    assert '1 skipped' in capsys.readouterr().out


def test_random_subset_and_target_selection(rows, tmp_path):
    ds, names, units = load_property_dataset(
        'compas1d', str(tmp_path), ['aEA', 'dipmom'], subset=4, seed=0,
        csv_path=str(COMPAS_CSV), workers=2, progress=False)
    assert units == {'aEA': 'eV', 'dipmom': 'D'}
    assert osp.basename(ds.processed_paths[0]) == \
        'compas1d_b3lyp_noH_rand4s0_mmff_s0_v1.pt'
    # numpy default_rng(0) picks rows 2341, 4435, 5526, 7379 (all C42H24).
    assert ds._data.idx.tolist() == [2341, 4435, 5526, 7379]
    for data in ds:
        row = rows[int(data.idx)]
        assert data.name == row['molecule'] and data.z.numel() == 42
        assert data.y.shape == (1, 2)
        assert data.y[0].tolist() == pytest.approx(
            [float(row['aEA_eV']), float(row['Dipmom_Debye'])], abs=1e-6)


def test_missing_csv_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match='gitlab.com/porannegroup'):
        COMPAS1D(str(tmp_path), progress=False)
