"""datasets/xtb_domains.py: GFN2-xTB forces are the gradient of its
energies, and a ``--small`` build writes the documented ANI-1x, SPICE and
rMD17 layouts and units, the same arrays on every run (with one worker or
two). Skipped where tblite (requirements-xtb.txt) is not installed."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('tblite')
h5py = pytest.importorskip('h5py')

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'datasets' / 'xtb_domains.py'
BOHR = 0.529177210903
HARTREE_KCAL_MOL = 27.211386245988 / 0.0433641043


def _load_script():
    spec = importlib.util.spec_from_file_location('xtb_domains', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def xd():
    return _load_script()


@pytest.fixture(scope='module')
def builds(tmp_path_factory):
    """Two ``--small`` builds of every domain: two workers, then one."""
    out = []
    for workers in (2, 1):
        folder = tmp_path_factory.mktemp(f'xtb_w{workers}')
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), '--small', '--quiet', '--out',
             str(folder), '--workers', str(workers)],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out.append(folder)
    return out


def test_forces_are_minus_finite_differences(xd):
    """Central differences (h = 1e-3 A) of xTB energies of a displaced
    aspirin agree with its analytic forces to ~1e-5 relative."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    mol = Chem.AddHs(Chem.MolFromSmiles('CC(=O)Oc1ccccc1C(=O)O'))
    assert AllChem.EmbedMolecule(mol, randomSeed=7) == 0
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    pos = mol.GetConformer().GetPositions()
    pos = pos + np.random.default_rng(0).normal(0, 0.05, pos.shape)
    energy, grad = xd.xtb_energy_gradient(z, pos)  # Ha, Ha/Bohr
    forces = -grad / BOHR  # Ha/A
    h = 1e-3
    fd = np.empty_like(forces)
    for i in range(len(z)):
        for k in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[i, k] += h
            minus[i, k] -= h
            fd[i, k] = -(xd.xtb_energy_gradient(z, plus)[0] -
                         xd.xtb_energy_gradient(z, minus)[0]) / (2 * h)
    rel = np.linalg.norm(fd - forces) / np.linalg.norm(forces)
    assert rel < 1e-4, rel
    assert np.abs(fd - forces).max() < 1e-4 * np.abs(forces).max()
    assert np.isfinite(energy)


def _arrays(folder: Path) -> dict:
    """Every array of a build, by file/group/key."""
    out = {}
    for name in ('ani1x_gfn2xtb.h5', 'spice_gfn2xtb.hdf5'):
        with h5py.File(folder / name, 'r') as f:
            def visit(key, obj, name=name):
                if isinstance(obj, h5py.Dataset):
                    value = obj[()]
                    if obj.dtype.kind == 'O':
                        value = np.array([v.decode() if isinstance(v, bytes)
                                          else v for v in value])
                    out[f'{name}/{key}'] = value
            f.visititems(visit)
    for path in sorted((folder / 'rmd17' / 'npz_data').glob('*.npz')):
        with np.load(path) as d:
            for key in d.files:
                out[f'{path.name}/{key}'] = d[key]
    return out


def test_small_build_is_reproducible(builds):
    a, b = (_arrays(folder) for folder in builds)
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert np.array_equal(a[key], b[key]), key
    ma, mb = (json.loads((f / 'manifest.json').read_text()) for f in builds)
    for domain in ('ani1x', 'spice', 'rmd17'):
        assert ma['domains'][domain]['content_sha256'] == \
            mb['domains'][domain]['content_sha256']


def test_small_build_manifest_and_failures(builds):
    folder = builds[0]
    m = json.loads((folder / 'manifest.json').read_text())
    assert m['versions']['tblite'] == '0.8.0'
    assert m['level_of_theory'] == 'GFN2-xTB'
    assert m['settings']['ani_molecules'] == 4  # the --small sizes
    d = m['domains']
    assert d['ani1x']['molecules'] == 4 and d['ani1x']['conformations'] == 16
    assert d['spice']['molecules'] == 2 and d['spice']['conformations'] == 8
    assert d['rmd17']['molecules'] == 2 and d['rmd17']['conformations'] == 12
    assert (folder / 'failures.csv').read_text().splitlines()[0] == \
        'domain,molecule,reason'


def test_ani1x_layout_and_units(builds, xd):
    """One group per formula; Angstrom, Hartree, Hartree/Angstrom: the
    stored labels are xTB's at the stored coordinates."""
    with h5py.File(builds[0] / 'ani1x_gfn2xtb.h5', 'r') as f:
        assert 'GFN2-xTB' in f.attrs['level_of_theory']
        assert len(f) == 4
        for formula, g in f.items():
            assert set(g) == {'atomic_numbers', 'coordinates',
                              'wb97x_dz.energy', 'wb97x_dz.forces',
                              'gfn2_xtb.energy', 'gfn2_xtb.forces',
                              'qm9_index', 'sampling'}
            z = g['atomic_numbers'][()]
            n = len(z)
            c = g['coordinates'].shape[0]
            assert z.dtype.kind in 'iu' and z.shape == (n,)
            assert formula == xd.hill_formula(z)
            assert g['coordinates'].dtype == np.float32
            assert g['coordinates'].shape == (c, n, 3)
            assert g['wb97x_dz.energy'].dtype == np.float64
            assert g['wb97x_dz.energy'].shape == (c,)
            assert g['wb97x_dz.forces'].shape == (c, n, 3)
            assert np.array_equal(g['wb97x_dz.energy'][()],
                                  g['gfn2_xtb.energy'][()])
            assert sorted(set(g['sampling'][()].tolist())) == [0, 1]
            assert (g['qm9_index'][()] >= 1).all()
            k = c - 1  # an MD snapshot
            pos = g['coordinates'][k].astype(np.float64)  # Angstrom
            e, grad = xd.xtb_energy_gradient(z, pos)
            assert abs(g['wb97x_dz.energy'][k] - e) < 1e-6  # Hartree
            np.testing.assert_allclose(g['wb97x_dz.forces'][k],
                                       -grad / BOHR, atol=2e-5)  # Ha/A
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
            assert d[np.triu_indices(n, 1)].min() > 0.5


def test_spice_layout_and_units(builds, xd):
    """One group per molecule; Bohr, Hartree, Hartree/Bohr; the mapped
    SMILES gives the atom order."""
    from rdkit import Chem
    with h5py.File(builds[0] / 'spice_gfn2xtb.hdf5', 'r') as f:
        assert len(f) == 2
        for name, g in f.items():
            assert set(g) == {'smiles', 'subset', 'atomic_numbers',
                              'conformations', 'dft_total_energy',
                              'dft_total_gradient'}
            assert g['smiles'].shape == (1,) and g['subset'].shape == (1,)
            smiles = g['smiles'].asstr()[0]
            assert g['subset'].asstr()[0] == 'MOSES GFN2-xTB'
            z = g['atomic_numbers'][()]
            assert z.dtype == np.int16
            n = len(z)
            c = g['conformations'].shape[0]
            assert 20 <= int((z > 1).sum()) <= 40
            assert g['conformations'].shape == (c, n, 3)
            assert g['conformations'].attrs['units'] == 'bohr'
            assert g['dft_total_energy'].shape == (c,)
            assert g['dft_total_energy'].dtype == np.float64
            assert g['dft_total_energy'].attrs['units'] == 'hartree'
            assert g['dft_total_gradient'].shape == (c, n, 3)
            assert g['dft_total_gradient'].attrs['units'] == 'hartree/bohr'
            mol = Chem.MolFromSmiles(smiles, sanitize=False)
            order = {a.GetAtomMapNum(): a.GetAtomicNum()
                     for a in mol.GetAtoms()}
            assert [order[i + 1] for i in range(n)] == z.tolist()
            k = c - 1  # a displaced conformer
            pos = g['conformations'][k].astype(np.float64) * BOHR
            e, grad = xd.xtb_energy_gradient(z, pos)
            assert abs(g['dft_total_energy'][k] - e) < 1e-6  # Hartree
            np.testing.assert_allclose(g['dft_total_gradient'][k], grad,
                                       atol=2e-5)  # Ha/Bohr
            # Bohr, not Angstrom: the shortest bonds (X-H, ~1.0-1.1 A) of
            # the MMFF-relaxed conformer are 1.8-2.1 Bohr.
            x = g['conformations'][0].astype(np.float64)
            d = np.linalg.norm(x[:, None] - x[None], axis=-1)
            assert 1.7 < d[np.triu_indices(n, 1)].min() < 2.2


def test_rmd17_layout_and_units(builds, xd):
    """``rmd17_<name>.npz``: Angstrom, kcal/mol, kcal/mol/Angstrom."""
    folder = builds[0] / 'rmd17' / 'npz_data'
    names = sorted(p.name for p in folder.glob('*.npz'))
    assert names == ['rmd17_ethanol.npz', 'rmd17_malonaldehyde.npz']
    with np.load(folder / 'rmd17_ethanol.npz') as d:
        assert set(d.files) == {'nuclear_charges', 'coords', 'energies',
                                'forces', 'old_indices'}
        z = d['nuclear_charges']
        assert z.tolist() == [6, 6, 8] + [1] * 6
        c = len(d['energies'])
        assert d['coords'].shape == (c, 9, 3) == d['forces'].shape
        assert d['coords'].dtype == np.float64
        assert np.all(np.diff(d['old_indices']) == 10)  # every 10th step
        k = c // 2
        e, grad = xd.xtb_energy_gradient(z, d['coords'][k])
        assert abs(d['energies'][k] - e * HARTREE_KCAL_MOL) < 1e-3
        np.testing.assert_allclose(d['forces'][k],
                                   -grad / BOHR * HARTREE_KCAL_MOL,
                                   atol=1e-2)
        # An intact molecule: the C-O bond stays a bond along the MD.
        co = np.linalg.norm(d['coords'][:, 1] - d['coords'][:, 2], axis=-1)
        assert (co > 1.2).all() and (co < 1.7).all()


def test_settings_are_validated(xd):
    with pytest.raises(ValueError, match='unknown'):
        xd.Settings(domains='ani1x,qm7').domain_list()
    with pytest.raises(ValueError, match='unknown'):
        xd.Settings(rmd17_molecules='aspirin,caffeine').rmd17_list()
    assert xd.hill_formula([6, 6, 8, 1, 1, 1, 1, 1, 1]) == 'C2H6O'
    assert xd.hill_formula([8, 1, 1]) == 'H2O'
