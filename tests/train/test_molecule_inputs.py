"""``unimol2 predict`` / ``embed`` on every kind of molecule file: SD and
XYZ atoms in file order with the file's coordinates, XYZ equal to SDF,
``--conformers`` averaging, the atom limit (skip or ``--crop``)."""
import csv
import gzip

import h5py
import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from pyg_unimol2.checkpoints import save_task_model
from pyg_unimol2.cli import main
from pyg_unimol2.errors import ConfigError
from pyg_unimol2.models.multitask import build_multitask
from pyg_unimol2.tasks import Task
from pyg_unimol2.data import from_smiles
from pyg_unimol2.train.conformers import conformer_seeds
from pyg_unimol2.train.inputs import (conformer_views,
                                      read_molecules, read_smiles)
from pyg_unimol2.train.predict import predict_molecules

SMILES = ['CC(=O)Nc1ccc(O)cc1', 'C[C@H](O)c1ccccc1', 'OC(=O)/C=C/C(=O)O']
ATOL = 1e-5


@pytest.fixture(scope='module')
def model():
    """A tiny fine-tuned-format model with a molecule- and an atom-level
    head, every weight redrawn at unit scale (at its initialization the
    CLS output hardly depends on the geometry: 1e-7 between conformers)."""
    model = build_multitask('tiny', {'d': [Task('gap'),
                                           Task('q', level='atom')]})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = p.shape[-1] ** -0.5 if p.dim() > 1 else 0.2
            offset = 1.0 if name.endswith('norm.weight') else 0.0
            p.copy_(offset + scale * torch.randn(p.shape,
                                                 generator=generator))
    return model.eval()


@pytest.fixture(scope='module')
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'best.pt'
    save_task_model(model, path)
    return str(path)


def _conformer(smiles: str, seed: int = 7) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol


def _shuffled(mol: Chem.Mol, seed: int) -> Chem.Mol:
    """:obj:`mol` with all atoms renumbered by a seeded permutation; the
    permutation is kept as the ``perm`` property (new atom i = old atom
    perm[i])."""
    perm = np.random.default_rng(seed).permutation(mol.GetNumAtoms())
    out = Chem.RenumberAtoms(mol, perm.tolist())
    out.SetProp('perm', ' '.join(map(str, perm)))
    return out


def _bonds_by_index(mol: Chem.Mol) -> Chem.Mol:
    """:obj:`mol` with its bonds listed by atom indices, as an XYZ frame's
    (the chirality code of an atom is relative to the order of its
    bonds)."""
    out = Chem.RWMol(mol)
    for bond in list(mol.GetBonds()):
        out.RemoveBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())
    for bond in sorted(mol.GetBonds(), key=lambda b: sorted(
            (b.GetBeginAtomIdx(), b.GetEndAtomIdx()))):
        i, j = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        out.AddBond(i, j, bond.GetBondType())
    out = out.GetMol()
    Chem.SanitizeMol(out)
    Chem.AssignStereochemistryFrom3D(out)
    return out


def _write_sdf(path, mols) -> None:
    writer = Chem.SDWriter(str(path))
    for mol in mols:
        writer.write(mol)
    writer.close()


def _sdf_heavy_atoms(path):
    """``(z, pos)`` of the heavy atoms of every record, in file order,
    parsed from the V2000 atom block by hand."""
    table = Chem.GetPeriodicTable()
    out, lines = [], open(path).read().split('$$$$\n')
    for block in lines[:-1]:
        rows = block.split('\n')
        n = int(rows[3][:3])
        atoms = [r.split() for r in rows[4:4 + n]]
        heavy = [a for a in atoms if a[3] != 'H']
        out.append((np.array([table.GetAtomicNumber(a[3]) for a in heavy]),
                    np.array([[float(v) for v in a[:3]] for a in heavy],
                             np.float32)))
    return out


def _embed(checkpoint, path, out, *extra):
    main(['embed', '--checkpoint', checkpoint, '--smiles', str(path),
          '--out', str(out), '--workers', '1', *extra])
    with h5py.File(out) as f:
        offsets = f['atom_offsets'][:]
        return [dict(index=int(f['index'][m]), cls=f['cls'][m],
                     name=f['name'][m].decode(),
                     smiles=f['smiles'][m].decode(),
                     **{k: f[k][offsets[m]:offsets[m + 1]]
                        for k in ('atoms', 'z', 'pos')})
                for m in range(len(offsets) - 1)]


def _predictions(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sdf_keeps_the_file_atom_order_and_coordinates(model, checkpoint,
                                                       tmp_path):
    base = [_conformer(s) for s in SMILES]
    files = {}
    for key, seed in (('a', 1), ('b', 2)):
        files[key] = tmp_path / f'{key}.sdf'
        _write_sdf(files[key], [_shuffled(m, seed + 10 * i)
                                for i, m in enumerate(base)])
    out = {k: _embed(checkpoint, p, tmp_path / f'{k}.h5')
           for k, p in files.items()}
    parsed = {k: _sdf_heavy_atoms(p) for k, p in files.items()}
    perms = {k: [np.array(m.GetProp('perm').split(), int)
                 for m in Chem.SDMolSupplier(str(p), removeHs=False)]
             for k, p in files.items()}
    for i, smiles in enumerate(SMILES):
        a, b = out['a'][i], out['b'][i]
        for key, emb in (('a', a), ('b', b)):  # the file's atoms, as given
            z, pos = parsed[key][i]
            np.testing.assert_array_equal(emb['z'], z)
            np.testing.assert_array_equal(emb['pos'], pos)
        # Original atom of each heavy row, then b's rows in a's order.
        old = {k: [int(p) for p in perms[k][i]
                   if base[i].GetAtomWithIdx(int(p)).GetAtomicNum() != 1]
               for k in perms}
        assert old['a'] != sorted(old['a']) and old['a'] != old['b']
        order = [old['a'].index(o) for o in old['b']]
        np.testing.assert_allclose(b['atoms'], a['atoms'][order], atol=ATOL)
        np.testing.assert_allclose(b['cls'], a['cls'], atol=ATOL)
        assert a['smiles'] == b['smiles'] == Chem.CanonSmiles(smiles)

    # predict: the same file order in the atom-level outputs, equal
    # molecule-level predictions.
    inputs = {k: read_molecules(p, progress=False) for k, p in files.items()}
    preds = {k: predict_molecules(model, v.result.data, progress=False)
             for k, v in inputs.items()}
    sizes = [d.num_nodes for d in inputs['a'].result.data]
    start = np.cumsum([0] + sizes)
    for i in range(len(SMILES)):
        old = {k: [int(p) for p in perms[k][i]
                   if base[i].GetAtomWithIdx(int(p)).GetAtomicNum() != 1]
               for k in perms}
        order = [old['a'].index(o) for o in old['b']]
        rows = slice(start[i], start[i + 1])
        torch.testing.assert_close(preds['b']['q'][rows],
                                   preds['a']['q'][rows][order],
                                   atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(preds['b']['gap'], preds['a']['gap'],
                               atol=ATOL, rtol=1e-4)
    main(['predict', '--checkpoint', checkpoint, '--smiles',
          str(files['b']), '--out', str(tmp_path / 'b.csv')])
    rows = _predictions(tmp_path / 'b.csv')
    assert [r['index'] for r in rows] == ['0', '1', '2']
    np.testing.assert_allclose([float(r['gap']) for r in rows],
                               preds['b']['gap'][:, 0].numpy(), rtol=1e-5)


def _xyz_frame(mol: Chem.Mol, comment: str) -> str:
    pos = mol.GetConformer().GetPositions()
    lines = [str(mol.GetNumAtoms()), comment]
    lines += [f'{a.GetSymbol()} {x:.4f} {y:.4f} {w:.4f}'
              for a, (x, y, w) in zip(mol.GetAtoms(), pos)]
    return '\n'.join(lines) + '\n'


def test_xyz_input_equals_the_same_molecules_from_sdf(checkpoint, tmp_path):
    mols = [_bonds_by_index(_shuffled(_conformer(s), 3)) for s in SMILES]
    for mol, name in zip(mols, ('paracetamol', 'phenylethanol', 'fumaric')):
        mol.SetProp('_Name', name)
    _write_sdf(tmp_path / 'm.sdf', mols)
    # Coordinates as the SD file holds them (4 decimals), so both files
    # give the same geometry: one plain frame, one extended-XYZ frame with
    # a SMILES template, one named by its comment; gzipped.
    sd = list(Chem.SDMolSupplier(str(tmp_path / 'm.sdf'), removeHs=False))
    comments = ['paracetamol',
                f'name=phenylethanol smiles="{SMILES[1]}" energy=-1.5',
                'fumaric']
    with gzip.open(tmp_path / 'm.xyz.gz', 'wt') as f:
        f.write('\n'.join(_xyz_frame(m, c) for m, c in zip(sd, comments)))
    sdf = _embed(checkpoint, tmp_path / 'm.sdf', tmp_path / 'sdf.h5')
    xyz = _embed(checkpoint, tmp_path / 'm.xyz.gz', tmp_path / 'xyz.h5')
    assert len(sdf) == len(xyz) == 3
    for s, x in zip(sdf, xyz):
        assert s['name'] == x['name'] and s['smiles'] == x['smiles']
        np.testing.assert_array_equal(x['z'], s['z'])
        np.testing.assert_array_equal(x['pos'], s['pos'])
        np.testing.assert_allclose(x['atoms'], s['atoms'], atol=ATOL)
        np.testing.assert_allclose(x['cls'], s['cls'], atol=ATOL)
    assert '@' in xyz[1]['smiles'] and '/' in xyz[2]['smiles']  # 3D stereo


def test_conformers_average_the_single_conformer_predictions(
        model, checkpoint, tmp_path):
    path = tmp_path / 'm.smi'
    path.write_text('\n'.join(f'{s} mol{i}' for i, s in enumerate(SMILES))
                    + '\n')
    assert read_smiles(path) == (SMILES, ['mol0', 'mol1', 'mol2'])
    k = 3
    seeds = conformer_seeds(0, k)
    assert seeds == [0, 2, 3] and conformer_seeds(4, k) == [4, 5, 6]
    inputs = read_molecules(path, workers=1, progress=False)
    views = conformer_views(inputs, k, workers=1, progress=False)
    assert [int(v.mol) for v in views] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Conformer j is the ETKDG conformer of seeds[j], all different (RDKit
    # gives seeds 0 and 1 the same conformer, hence the skipped 1).
    assert torch.equal(from_smiles(SMILES[0], seed=0).pos,
                       from_smiles(SMILES[0], seed=1).pos)
    for i, smiles in enumerate(SMILES):
        for j, seed in enumerate(seeds):
            assert torch.equal(views[k * i + j].pos,
                               from_smiles(smiles, seed=seed).pos)
        assert len({views[k * i + j].pos.sum().item()
                    for j in range(k)}) == k
    averaged = predict_molecules(model, views, progress=False)
    single = [predict_molecules(model, read_molecules(
        path, seed=seed, workers=1, progress=False).result.data,
        progress=False) for seed in seeds]
    for task in ('gap', 'q'):
        mean = torch.stack([s[task] for s in single]).mean(0)
        torch.testing.assert_close(averaged[task], mean, atol=1e-5, rtol=0)
        assert (single[0][task] - single[1][task]).abs().max() > 1e-3
    main(['predict', '--checkpoint', checkpoint, '--smiles', str(path),
          '--out', str(tmp_path / 'p.csv'), '--workers', '1',
          '--conformers', str(k)])
    rows = _predictions(tmp_path / 'p.csv')
    assert [r['name'] for r in rows] == ['mol0', 'mol1', 'mol2']
    np.testing.assert_allclose([float(r['gap']) for r in rows],
                               averaged['gap'][:, 0].numpy(), rtol=1e-5)


@pytest.mark.parametrize('suffix', ['sdf', 'xyz'])
def test_conformers_on_a_file_with_geometry_is_an_error(checkpoint,
                                                        tmp_path, suffix):
    path = tmp_path / f'm.{suffix}'
    mol = _conformer('CCO')
    if suffix == 'sdf':
        _write_sdf(path, [mol])
    else:
        path.write_text(_xyz_frame(mol, 'ethanol'))
    with pytest.raises(ConfigError, match='own geometry.*drop --conformers'):
        main(['--debug', 'predict', '--checkpoint', checkpoint, '--smiles',
              str(path), '--out', str(tmp_path / 'p.csv'),
              '--conformers', '2'])
    assert not (tmp_path / 'p.csv').exists()


def test_crop_keeps_max_atoms_seeded_and_reports(checkpoint, tmp_path):
    path = tmp_path / 'm.smi'
    path.write_text('CCO\nCC(=O)Nc1ccc(O)cc1\n')  # 3 and 11 heavy atoms
    full = _embed(checkpoint, path, tmp_path / 'full.h5')
    runs = {name: _embed(checkpoint, path, tmp_path / f'{name}.h5',
                         '--max-atoms', '8', '--crop', *extra)
            for name, extra in (('a', []), ('again', []),
                                ('seed1', ['--seed', '1']))}
    for name, run in runs.items():
        assert [m['index'] for m in run] == [0, 1]
        assert len(run[1]['z']) == 8
        np.testing.assert_array_equal(run[0]['pos'], full[0]['pos'])
    # The same seed, the same atoms; kept in their original order.
    for key in ('atoms', 'pos', 'cls'):
        np.testing.assert_array_equal(runs['a'][1][key],
                                      runs['again'][1][key])
    kept = {}
    for name, run in runs.items():
        rows = [int(np.flatnonzero((full[1]['pos'] == p).all(1))[0])
                for p in run[1]['pos']]
        assert rows == sorted(rows)
        np.testing.assert_array_equal(run[1]['z'], full[1]['z'][rows])
        kept[name] = rows
    assert kept['seed1'] != kept['a']
    with open(tmp_path / 'a.cropped.csv') as f:
        assert list(csv.DictReader(f)) == [dict(
            index='1', smiles='CC(=O)Nc1ccc(O)cc1', atoms='11', kept='8')]
    assert not (tmp_path / 'a.failures.csv').exists()


def test_over_the_limit_is_skipped_and_reported(checkpoint, tmp_path,
                                                capsys):
    path = tmp_path / 'm.csv'
    path.write_text('id,SMILES\n1,CCO\n2,CC(=O)Nc1ccc(O)cc1\n3,c1ccncc1\n')
    out = tmp_path / 'p.csv'
    main(['predict', '--checkpoint', checkpoint, '--smiles', str(path),
          '--smiles-col', 'SMILES', '--out', str(out), '--workers', '1',
          '--max-atoms', '8'])
    rows = _predictions(out)
    assert [(r['index'], r['smiles']) for r in rows] == [('0', 'CCO'),
                                                         ('2', 'c1ccncc1')]
    assert all(np.isfinite(float(r['gap'])) for r in rows)
    failures = _predictions(tmp_path / 'p.failures.csv')
    assert [(f['index'], f['smiles']) for f in failures] == [
        ('1', 'CC(=O)Nc1ccc(O)cc1')]
    assert '11 > max_atoms=8' in failures[0]['reason']
    printed = capsys.readouterr().out
    assert 'row 2: too many atoms' in printed
    assert not (tmp_path / 'p.cropped.csv').exists()


def test_input_mistakes_are_named(checkpoint, tmp_path):
    common = ['--checkpoint', checkpoint, '--out', str(tmp_path / 'o.h5')]
    with pytest.raises(FileNotFoundError, match='nope.sdf: no such file'):
        main(['--debug', 'embed', '--smiles', str(tmp_path / 'nope.sdf'),
              *common])
    broken = tmp_path / 'broken.xyz'
    broken.write_text('1\nethanol\nO 0 0 0\nnot a count\n')
    with pytest.raises(ValueError, match=r"broken\.xyz: line 4: 'not a "
                       r"count' is not the atom count of frame 1"):
        main(['--debug', 'embed', '--smiles', str(broken), *common])
    assert not (tmp_path / 'o.h5').exists()  # no half-written output
    path = tmp_path / 'm.smi'
    path.write_text('CCO\n')
    with pytest.raises(ConfigError, match='--max-atoms must be at least 1'):
        main(['--debug', 'predict', '--smiles', str(path), *common,
              '--max-atoms', '0'])
