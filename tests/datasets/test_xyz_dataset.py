"""XYZDataset: labels from extended-XYZ comment properties, atoms and
atom-level labels in file order, bad frames reported; finetune --data on
an XYZ file."""
import json
import math
import shlex

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem, Descriptors

from conftest import read_moses
from pyg_unimol2.cli import main
from pyg_unimol2.datasets import XYZDataset
from pyg_unimol2.tasks import Task


def _frame(smiles: str, seed: int, labels: str) -> str:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    order = np.random.default_rng(seed).permutation(mol.GetNumAtoms())
    mol = Chem.RenumberAtoms(mol, order.tolist())  # hydrogens in between
    AllChem.ComputeGasteigerCharges(mol)
    charges = ' '.join(f'{a.GetDoubleProp("_GasteigerCharge"):.4f}'
                       for a in mol.GetAtoms())
    tpsa = Descriptors.TPSA(mol)
    lines = [str(mol.GetNumAtoms()),
             f'name=m{seed} tpsa={tpsa:.3f} charges="{charges}" {labels}']
    lines += [f'{a.GetSymbol()} {x:.5f} {y:.5f} {z:.5f}' for a, (x, y, z) in
              zip(mol.GetAtoms(), mol.GetConformer().GetPositions())]
    return '\n'.join(lines) + '\n'


@pytest.fixture(scope='module')
def xyz_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('xyz') / 'mols.xyz'
    frames = [_frame(s, i, f'split={"test" if i % 4 == 3 else "train"}')
              for i, s in enumerate(read_moses(16))]
    frames[5] = frames[5].replace(' tpsa=', ' other=')  # a missing label
    frames.insert(2, '1\nbroken\nXx 0 0 0\n')  # frame 2: unknown element
    path.write_text(''.join(frames))
    return path


def test_labels_atoms_and_report(xyz_file, tmp_path):
    tasks = [Task('tpsa'), Task('q', level='atom', columns=['charges'])]
    dataset = XYZDataset(str(tmp_path), str(xyz_file), tasks,
                         split_prop='split', progress=False, log=False)
    assert len(dataset) == 16
    assert [r['row'] for r in dataset.report] == [2]
    assert "unknown element 'Xx'" in dataset.report[0]['reason']
    text = xyz_file.read_text().split('\n')
    starts, i = [], 0
    while i < len(text) - 1:  # parse the file by hand
        starts.append(i)
        i += int(text[i]) + 2
    for data in dataset:
        row = int(data.idx)
        head = starts[row]
        atoms = [line.split() for line in
                 text[head + 2:head + 2 + int(text[head])]]
        props = dict(p.split('=', 1) for p in shlex.split(text[head + 1]))
        charges = props['charges'].split()
        heavy = [k for k, a in enumerate(atoms) if a[0] != 'H']
        np.testing.assert_allclose(
            data.pos.numpy(), [[float(v) for v in atoms[k][1:]]
                               for k in heavy], atol=1e-5)
        np.testing.assert_allclose(data.atom_y[:, 0].numpy(),
                                   [float(charges[k]) for k in heavy],
                                   atol=1e-6)
        if 'tpsa' in props:
            assert math.isclose(float(data.y[0, 0]), float(props['tpsa']),
                                rel_tol=1e-6)
        else:
            assert row == 6 and math.isnan(float(data.y[0, 0]))
        assert data.name == props['name']
        assert data.split_tag == props['split']


def test_finetune_and_predict_on_an_xyz_file(xyz_file, tmp_path):
    main(['finetune', '--data', str(xyz_file), '--targets', 'tpsa',
          '--preset', 'tiny', '--epochs', '1', '--batch-size', '8',
          '--split', 'column', '--split-col', 'split',
          '--root', str(tmp_path / 'data'), '--out', str(tmp_path / 'run')])
    results = json.loads((tmp_path / 'run' / 'results.json').read_text())
    assert results['datasets']['data']['test']['tpsa']['count'] == 4
    main(['predict', '--checkpoint', str(tmp_path / 'run' / 'best.pt'),
          '--smiles', str(xyz_file), '--out', str(tmp_path / 'p.csv')])
    rows = (tmp_path / 'p.csv').read_text().splitlines()
    assert rows[0] == 'index,smiles,name,tpsa' and len(rows) == 17
    assert (tmp_path / 'p.failures.csv').read_text().count('\n') == 2
