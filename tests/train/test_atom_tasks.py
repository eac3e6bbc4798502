"""Atom-level tasks (Graphium's node-level tasks) train next to
molecule-level ones: per-atom Gasteiger charges and the molecule's logP."""
import csv
import json

import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem, Crippen

from conftest import read_moses
from pyg_unimol2.cli import main


def test_atom_and_molecule_tasks_train_and_score(tmp_path):
    smiles = read_moses(48)
    with open(tmp_path / 'charges.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['smiles', 'charges', 'logP'])
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s)
            AllChem.ComputeGasteigerCharges(mol)
            charges = ' '.join(f"{a.GetDoubleProp('_GasteigerCharge'):.5f}"
                               for a in mol.GetAtoms())
            w.writerow([s, '' if i % 4 == 0 else charges,
                        f'{Crippen.MolLogP(mol):.4f}'])
    config = tmp_path / 'atoms.toml'
    config.write_text(f'''
[train]
preset = "tiny"
epochs = 2
batch_size = 8
lr = 5e-4

[[datasets]]
name = "mols"
path = "{tmp_path / 'charges.csv'}"

[[datasets.tasks]]
name = "charges"
level = "atom"

[[datasets.tasks]]
name = "logP"
''')
    main(['finetune', '--config', str(config), '--root', str(tmp_path),
          '--workers', '1', '--out', str(tmp_path / 'run')])
    results = json.loads((tmp_path / 'run' / 'results.json').read_text())
    test = results['datasets']['mols']['test']
    split = np.load(tmp_path / 'run' / 'split_mols_random_seed0.npz')
    atoms = sum(Chem.MolFromSmiles(smiles[i]).GetNumAtoms()
                for i in split['test'] if i % 4 != 0)
    assert test['charges']['count'] == atoms  # every labelled test atom
    assert 0 < test['charges']['mae'] < 1.0
    assert test['logP']['count'] == len(split['test'])
    lines = [json.loads(x) for x in
             (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert all(np.isfinite(r['loss/mols/charges']) for r in lines
               if r['group'] == 'train')
