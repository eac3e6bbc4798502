"""SDFDataset on an SD file the test writes: RDKit conformers with the atoms
shuffled (hydrogens between heavy atoms), Gasteiger charges of every atom as
an atom-level property, a 2D record, an unparsable record and a duplicate."""
import gzip
import io
import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from pyg_unimol2.datasets import SDFDataset
from pyg_unimol2.tasks import Task, TaskError, label_slices

TASKS = [Task('pIC50', unit='log10(1/M)'),
         Task('active', 'classification'),
         Task('charge', level='atom', columns=['charges'], unit='e')]
PENTAVALENT = """pentavalent
     RDKit          3D

  6  5  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.2990    0.7500    0.1000 F   0  0  0  0  0  0  0  0  0  0  0  0
   -1.2990    0.7500    0.1000 F   0  0  0  0  0  0  0  0  0  0  0  0
   -0.0000   -1.5000    0.1000 F   0  0  0  0  0  0  0  0  0  0  0  0
   -1.2990   -0.7500    0.1000 F   0  0  0  0  0  0  0  0  0  0  0  0
    1.2990   -0.7500    0.1000 F   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
  1  4  1  0
  1  5  1  0
  1  6  1  0
M  END
>  <pIC50>
5.0

$$$$
"""


def gasteiger(mol):
    mol = Chem.Mol(mol)
    AllChem.ComputeGasteigerCharges(mol)
    return [a.GetDoubleProp('_GasteigerCharge') for a in mol.GetAtoms()]


def conformer(smiles, seed, shuffle=True, hydrogens=True):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    if shuffle:  # hydrogens end up between heavy atoms
        order = np.random.default_rng(seed).permutation(mol.GetNumAtoms())
        mol = Chem.RenumberAtoms(mol, order.tolist())
    if not hydrogens:
        mol = Chem.RemoveHs(mol)
    return mol


def block(mol, name, **props):
    mol = Chem.Mol(mol)
    mol.SetProp('_Name', name)
    for key, value in props.items():
        mol.SetProp(key, value)
    out = io.StringIO()
    writer = Chem.SDWriter(out)
    writer.write(mol)
    writer.close()
    return out.getvalue()


def charges_prop(mol, count=None):
    q = gasteiger(mol)[:count]
    return ' '.join(f'{v:.6f}' for v in q)


def parse_sdf(text):
    """Atoms (symbol, xyz) and properties of every record, read without
    RDKit."""
    records = []
    for rec in text.split('$$$$\n')[:-1]:
        lines = rec.split('\n')
        n = int(lines[3][:3])
        atoms = [(line[31:34].strip(), [float(line[0:10]),
                                       float(line[10:20]),
                                       float(line[20:30])])
                 for line in lines[4:4 + n]]
        props = {}
        for k, line in enumerate(lines):
            if line.startswith('>'):
                props[line.split('<')[1].split('>')[0]] = lines[k + 1]
        records.append((atoms, props))
    return records


@pytest.fixture(scope='module')
def sdf_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp('sdf')
    ethanol = conformer('CCO', 1)
    aniline = conformer('Nc1ccccc1', 2)
    phenol = Chem.MolFromSmiles('Oc1ccccc1')
    AllChem.Compute2DCoords(phenol)
    acetic = conformer('CC(=O)O', 4, shuffle=False, hydrogens=False)
    ethanol2 = conformer('OCC', 5)
    propane = conformer('CCC', 6)
    text = ''.join([
        block(ethanol, 'ethanol', pIC50='6.5', active='yes', id='m0',
              split='train', charges=charges_prop(ethanol)),
        block(aniline, 'aniline', pIC50='bad', active='no', id='m1',
              split='test', charges=charges_prop(aniline)),
        block(phenol, 'phenol 2D', pIC50='5.0', active='no', id='m2',
              charges=charges_prop(phenol)),
        PENTAVALENT,
        block(acetic, 'acetic acid', pIC50='4.0', active='no', id='m4',
              split='train', charges=charges_prop(acetic)),
        block(ethanol2, 'ethanol again', pIC50='7.0', active='yes',
              id='m5', split='test', charges=charges_prop(ethanol2)),
        block(propane, 'propane', active='no', id='m6', split='train',
              charges=charges_prop(propane, 3)),  # wrong count
    ])
    path = folder / 'mols.sdf'
    path.write_text(text)
    gz = folder / 'mols.sdf.gz'
    with gzip.open(gz, 'wt') as f:
        f.write(text)
    return path, gz, parse_sdf(text)


@pytest.fixture(scope='module')
def sdf_ds(tmp_path_factory, sdf_file):
    root = tmp_path_factory.mktemp('sdf_root')
    return SDFDataset(str(root), str(sdf_file[0]), TASKS, split_prop='split',
                      progress=False, log=False)


KEPT = [0, 1, 4, 5, 6]


def test_records_kept_and_skipped(sdf_ds):
    assert [int(d.idx) for d in sdf_ds] == KEPT
    assert [d.name for d in sdf_ds] == ['ethanol', 'aniline', 'acetic acid',
                                        'ethanol again', 'propane']
    assert [d.split_tag for d in sdf_ds] == ['train', 'test', 'train',
                                             'test', 'train']
    assert [d.smiles for d in sdf_ds] == [
        Chem.CanonSmiles(s) for s in ('CCO', 'Nc1ccccc1', 'CC(=O)O', 'CCO',
                                      'CCC')]
    report = sdf_ds.report
    assert [(r['row'], r['column']) for r in report] == [
        (1, 'pIC50'), (2, ''), (3, ''), (6, 'charges')]
    assert 'not a number' in report[0]['reason']
    assert report[1]['reason'] == 'no 3D conformer'
    assert 'unparsable record' in report[2]['reason']
    assert 'expected 11 atom values' in report[3]['reason']
    assert repr(sdf_ds) == ("SDFDataset(mols.sdf, 5, tasks=['pIC50', "
                            "'active', 'charge'])")


def test_labels_from_properties(sdf_ds, sdf_file):
    records = sdf_file[2]
    tasks = sdf_ds.tasks
    assert tasks[1].classes == ['no', 'yes']
    assert label_slices(tasks)['charge'] == ('atom_y', slice(0, 1))
    for data in sdf_ds:
        i = int(data.idx)
        props = records[i][1]
        y = data.y[0].tolist()
        if i in (1, 6):  # 'bad' / no pIC50 property
            assert math.isnan(y[0])
        else:
            assert y[0] == pytest.approx(float(props['pIC50']))
        assert y[1] == float(props['active'] == 'yes')


def test_conformer_and_atom_labels_in_file_order(sdf_ds, sdf_file):
    records = sdf_file[2]
    for data in sdf_ds:
        i = int(data.idx)
        atoms, props = records[i]
        heavy = [k for k, (sym, _) in enumerate(atoms) if sym != 'H']
        assert i == 4 or len(heavy) < len(atoms)  # hydrogens in the file
        if i != 4:
            assert heavy != list(range(len(heavy)))  # shuffled: H between
        xyz = torch.tensor([atoms[k][1] for k in heavy])
        assert torch.allclose(data.pos, xyz, atol=1e-4)  # file order
        symbols = [Chem.GetPeriodicTable().GetElementSymbol(z)
                   for z in data.z.tolist()]
        assert symbols == [atoms[k][0] for k in heavy]
        q = [float(v) for v in props['charges'].split()]
        if i == 6:
            assert torch.isnan(data.atom_y).all()
        else:
            assert torch.allclose(data.atom_y[:, 0],
                                  torch.tensor([q[k] for k in heavy]),
                                  atol=1e-6)


def test_keep_hydrogens(tmp_path, sdf_file):
    records = sdf_file[2]
    ds = SDFDataset(str(tmp_path), str(sdf_file[0]), TASKS,
                    remove_hs=False, name_prop='id', progress=False,
                    log=False)
    assert [d.name for d in ds] == ['m0', 'm1', 'm4', 'm5', 'm6']
    for data in ds:
        i = int(data.idx)
        atoms, props = records[i]
        n = len(atoms)
        xyz = torch.tensor([a[1] for a in atoms])
        assert torch.allclose(data.pos[:n], xyz, atol=1e-4)
        if i == 6:
            continue
        q = torch.tensor([float(v) for v in props['charges'].split()])
        assert torch.allclose(data.atom_y[:n, 0], q, atol=1e-6)
        if i == 4:  # heavy atoms only in the file: RDKit adds 4 H
            assert data.num_nodes == 8 and data.z[4:].tolist() == [1] * 4
            assert torch.isnan(data.atom_y[4:]).all()
        else:
            assert data.num_nodes == n


def test_duplicates(sdf_ds):
    assert sdf_ds.duplicates == [dict(canonical_smiles='CCO', rows=[0, 5],
                                      column='pIC50', values=['6.5', '7.0'])]


def test_gzip_and_cache(tmp_path, sdf_ds, sdf_file, monkeypatch):
    gz = SDFDataset(str(tmp_path), str(sdf_file[1]), TASKS,
                    split_prop='split', progress=False, log=False)
    assert len(gz) == len(sdf_ds)
    for a, b in zip(gz, sdf_ds):
        assert torch.equal(a.pos, b.pos)
        assert torch.equal(torch.nan_to_num(a.atom_y),
                           torch.nan_to_num(b.atom_y))
        assert torch.equal(torch.nan_to_num(a.y), torch.nan_to_num(b.y))
    assert gz.report == sdf_ds.report

    def no_process(self):
        raise AssertionError('reprocessed')

    monkeypatch.setattr(SDFDataset, 'process', no_process)
    again = SDFDataset(str(tmp_path), str(sdf_file[1]), TASKS,
                       split_prop='split', progress=False, log=False)
    assert again.tasks[1].classes == ['no', 'yes']
    assert again.report == gz.report and again.duplicates == gz.duplicates
    with pytest.raises(AssertionError, match='reprocessed'):
        SDFDataset(str(tmp_path), str(sdf_file[1]), TASKS,
                   progress=False, log=False)  # other split_prop


def test_missing_property(tmp_path, sdf_file):
    with pytest.raises(TaskError, match=r"mols\.sdf.*'logS'.*'pIC50'"):
        SDFDataset(str(tmp_path), str(sdf_file[0]), [Task('logS')],
                   progress=False, log=False)
    with pytest.raises(ValueError, match='not an SD file'):
        SDFDataset(str(tmp_path), str(tmp_path / 'x.csv'), [Task('logS')])
