"""``unimol2 finetune --data`` on real labelled files: B3DB classification
with its sparse logBB column as a second task (Uni-Mol2 and the
fingerprint baseline in the same harness), and a joint run over QM9 +
B3DB + MoleculeACE with the temperature sampler."""
import csv
import json

import numpy as np
import pytest

from conftest import SHARED, read_moses
from pyg_unimol2.cli import main
from pyg_unimol2.errors import ConfigError
from pyg_unimol2.data.samplers import dataset_probabilities

B3DB = SHARED / 'datasets' / 'b3db' / 'B3DB_classification.tsv'
ACE = SHARED / 'datasets' / 'moleculeace' / 'CHEMBL2835_Ki.csv'


def _head(source, target, rows, delimiter):
    """The header and rows ``rows`` of a table, in the same format."""
    with open(source, newline='') as f:
        lines = list(csv.reader(f, delimiter=delimiter))
    with open(target, 'w', newline='') as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(lines[0])
        w.writerows(lines[1 + i] for i in rows)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('multitask')
    # 80 B3DB rows: the first 60 (logBB filled for most) and 20 without
    # logBB from further down, plus a bad SMILES row.
    with open(B3DB, newline='') as f:
        lines = list(csv.reader(f, delimiter='\t'))
    header, body = lines[0], lines[1:]
    col = header.index('logBB')
    sparse = [i for i, r in enumerate(body) if not r[col]][:20]
    rows = list(range(60)) + sparse
    _head(B3DB, tmp / 'b3db.tsv', rows, '\t')
    with open(tmp / 'b3db.tsv', 'a', newline='') as f:
        bad = ['9999', 'bad', '', 'not_a_smiles', '', '', 'BBB+'] + \
            [''] * (len(header) - 7)
        csv.writer(f, delimiter='\t').writerow(bad)
    _head(ACE, tmp / 'CHEMBL2835_Ki.csv', range(80), ',')
    return tmp


def _run(args, capsys):
    main(args)
    return capsys.readouterr().out


def test_b3db_classification_and_sparse_regression(files, capsys):
    common = ['finetune', '--data', str(files / 'b3db.tsv'), '--smiles-col',
              'SMILES', '--targets',
              'BBB+/BBB-:classification,logBB:regression', '--split',
              'scaffold', '--preset', 'tiny', '--epochs', '2',
              '--batch-size', '16', '--lr', '5e-4', '--root',
              str(files / 'data'), '--workers', '2']
    printed = _run(common + ['--out', str(files / 'unimol2')], capsys)
    assert 'data/BBB+/BBB-: auroc=' in printed and 'average_precision=' \
        in printed and 'data/logBB' in printed and 'mae=' in printed
    results = json.loads((files / 'unimol2' / 'results.json').read_text())
    test = results['datasets']['data']['test']
    assert 0.0 <= test['BBB+/BBB-']['auroc'] <= 1.0
    assert test['logBB']['mae'] > 0
    # Only the observed logBB labels are scored.
    with open(files / 'unimol2' / 'test_predictions_data.csv') as f:
        preds = list(csv.DictReader(f))
    observed = [r for r in preds if r['logBB'] != '']
    assert test['logBB']['count'] == len(observed) < len(preds)
    assert test['BBB+/BBB-']['count'] == len(preds)
    probs = [float(r['BBB+/BBB-_prob']) for r in preds]
    assert all(0 < p < 1 for p in probs)
    mae = np.mean([abs(float(r['logBB']) - float(r['logBB_pred']))
                   for r in observed])
    assert mae == pytest.approx(test['logBB']['mae'], rel=1e-4)
    tasks = {t['name']: t for t in results['datasets']['data']['tasks']}
    assert tasks['BBB+/BBB-']['classes'] == ['BBB-', 'BBB+']

    printed = _run(common + ['--model', 'fingerprint', '--out',
                             str(files / 'fp')], capsys)
    assert 'auroc=' in printed and 'mae=' in printed
    fp = json.loads((files / 'fp' / 'results.json').read_text())
    assert fp['config']['model'] == 'fingerprint'
    assert fp['datasets']['data']['sizes'] == \
        results['datasets']['data']['sizes']

    # predict writes probabilities for the classification task.
    (files / 'in.smi').write_text('CCO\nc1ccccc1N\nnot_a_smiles\n')
    main(['predict', '--checkpoint', str(files / 'unimol2' / 'best.pt'),
          '--smiles', str(files / 'in.smi'), '--out', str(files / 'p.csv'),
          '--workers', '1'])
    with open(files / 'p.csv') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['index', 'smiles', 'BBB+/BBB-_prob', 'logBB']
    assert [r['index'] for r in rows] == ['0', '1']
    assert all(0 < float(r['BBB+/BBB-_prob']) < 1 for r in rows)


def test_joint_qm9_b3db_moleculeace_with_temperature_sampling(files,
                                                               capsys):
    config = files / 'joint.toml'
    config.write_text(f'''
[train]
preset = "tiny"
epochs = 2
batch_size = 16
lr = 5e-4
mix = "temperature"
temperature = 2.0

[[datasets]]
name = "qm9"
builtin = "qm9"
subset = 200
targets = "homo,gap"

[[datasets]]
name = "b3db"
builtin = "b3db"
path = "{files / 'b3db.tsv'}"
split = "scaffold"

[[datasets]]
name = "ace"
builtin = "moleculeace"
target = "CHEMBL2835_Ki"
path = "{files / 'CHEMBL2835_Ki.csv'}"
split = "column"
weight = 0.5
''')
    out = files / 'joint'
    printed = _run(['finetune', '--config', str(config), '--root',
                    str(files / 'data'), '--workers', '2', '--out',
                    str(out)], capsys)
    results = json.loads((out / 'results.json').read_text())
    expected = {'qm9': ['homo', 'gap'], 'b3db': ['BBB+/BBB-', 'logBB'],
                'ace': ['y']}
    for name, tasks in expected.items():
        test = results['datasets'][name]['test']
        assert list(test) == tasks
        for task in tasks:
            metric = 'auroc' if task == 'BBB+/BBB-' else 'mae'
            assert test[task][metric] is not None, (name, task)
            assert f'{name}/{task}' in printed
    assert results['datasets']['ace']['sizes']['test'] == sum(
        1 for r in csv.DictReader(open(files / 'CHEMBL2835_Ki.csv'))
        if r['split'] == 'test')
    # Batches come from every dataset, in proportions near n_d^(1/2).
    lines = [json.loads(x) for x in (out / 'metrics.jsonl').read_text()
             .splitlines() if '"train"' in x]
    sizes = {n: results['datasets'][n]['sizes']['train'] for n in expected}
    seen = {n: sum(f'loss/{n}/{expected[n][0]}' in r for r in lines)
            for n in expected}
    # Each record holds the losses of the datasets of its micro-batch.
    assert all(seen.values()), seen
    p = dataset_probabilities(list(sizes.values()), 'temperature', 2.0)
    assert p == pytest.approx(np.sqrt(list(sizes.values())) /
                              np.sqrt(list(sizes.values())).sum())


def test_kfold_runs_every_fold_and_summarizes(tmp_path, capsys):
    source = SHARED / 'datasets' / 'freesolv' / 'freesolv.csv'
    _head(source, tmp_path / 'solv.csv', range(50), ',')
    printed = _run(['finetune', '--data', str(tmp_path / 'solv.csv'),
                    '--targets', 'expt', '--split', 'kfold', '--folds', '2',
                    '--preset', 'tiny', '--epochs', '1', '--batch-size', '16',
                    '--root', str(tmp_path / 'data'), '--workers', '1',
                    '--out', str(tmp_path / 'cv')], capsys)
    assert 'mean (std) over 2 folds' in printed
    folds = [json.loads((tmp_path / 'cv' / f'fold{k}' / 'results.json')
                        .read_text()) for k in range(2)]
    tests = [np.load(tmp_path / 'cv' / f'split_data_kfold{k}_seed0.npz')
             ['test'] for k in range(2)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(50))
    summary = json.loads((tmp_path / 'cv' / 'results.json').read_text())
    maes = [f['datasets']['data']['test']['expt']['mae'] for f in folds]
    mean, std = summary['datasets']['data']['test']['expt']['mae'].split()
    assert float(mean) == pytest.approx(np.mean(maes), rel=1e-3)


def test_config_and_target_mistakes_are_named(tmp_path):
    # --debug: the user errors are raised (without it: one line, exit 2).
    config = tmp_path / 'bad.toml'
    config.write_text('[train]\npreset = "tiny"\nlearning_rate = 1\n\n'
                      '[[datasets]]\nname = "x"\npath = "x.csv"\n'
                      'targets = "y"\n')
    with pytest.raises(ValueError, match="unknown \\[train\\] keys "
                       "\\['learning_rate'\\]"):
        main(['--debug', 'finetune', '--config', str(config), '--root',
              str(tmp_path)])
    config.write_text('[[datasets]]\nname = "x"\npath = "x.csv"\n'
                      'smile_col = "s"\n')
    with pytest.raises(ValueError, match="unknown keys \\['smile_col'\\]"):
        main(['--debug', 'finetune', '--config', str(config)])
    with pytest.raises(ValueError, match="unknown kind 'regresion'"):
        main(['--debug', 'finetune', '--data', str(B3DB), '--targets',
              'logBB:regresion'])


def test_sdf_file_trains_and_predicts_with_its_conformers(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem, Descriptors
    writer = Chem.SDWriter(str(tmp_path / 'mols.sdf'))
    for i, smi in enumerate(read_moses(24)):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=i)
        mol.SetProp('tpsa', f'{Descriptors.TPSA(mol):.3f}')
        writer.write(mol)
    writer.close()
    main(['finetune', '--data', str(tmp_path / 'mols.sdf'), '--targets',
          'tpsa', '--preset', 'tiny', '--epochs', '1', '--batch-size', '8',
          '--root', str(tmp_path / 'data'), '--out', str(tmp_path / 'run')])
    results = json.loads((tmp_path / 'run' / 'results.json').read_text())
    assert results['datasets']['data']['test']['tpsa']['count'] > 0
    main(['predict', '--checkpoint', str(tmp_path / 'run' / 'best.pt'),
          '--smiles', str(tmp_path / 'mols.sdf'), '--out',
          str(tmp_path / 'p.csv')])
    with open(tmp_path / 'p.csv') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['index']) for r in rows] == list(range(24))
    assert all(np.isfinite(float(r['tpsa'])) for r in rows)


def test_max_atoms_skips_larger_molecules_and_reports_them(tmp_path, capsys):
    from rdkit import Chem
    source = SHARED / 'datasets' / 'freesolv' / 'freesolv.csv'
    _head(source, tmp_path / 'solv.csv', range(60), ',')
    with open(tmp_path / 'solv.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    heavy = [Chem.MolFromSmiles(r['smiles']).GetNumHeavyAtoms() for r in rows]
    limit = 6
    assert 10 < sum(n > limit for n in heavy) < 50  # both kinds present
    _run(['finetune', '--data', str(tmp_path / 'solv.csv'), '--targets',
          'expt', '--max-atoms', str(limit), '--preset', 'tiny', '--epochs',
          '1', '--batch-size', '16', '--root', str(tmp_path / 'data'),
          '--workers', '1', '--out', str(tmp_path / 'run')], capsys)
    split = np.load(tmp_path / 'run' / 'split_data_random_seed0.npz')
    kept = sum(len(split[k]) for k in ('train', 'valid', 'test'))
    assert kept == sum(n <= limit for n in heavy)
    report, = (tmp_path / 'data').rglob('*report*.csv')
    with open(report, newline='') as f:
        reasons = [r['reason'] for r in csv.DictReader(f)]
    assert len(reasons) == sum(n > limit for n in heavy)
    assert all(f'max_atoms={limit}' in r for r in reasons)


def test_max_atoms_on_qm9_drops_the_larger_molecules(tmp_path, capsys):
    from pyg_unimol2.datasets.specs import DatasetSpec, open_dataset
    whole, _ = open_dataset(DatasetSpec('qm9', builtin='qm9', subset=200),
                            str(tmp_path), workers=1, progress=False)
    small, _ = open_dataset(DatasetSpec('qm9', builtin='qm9', subset=200,
                                        max_atoms=8),
                            str(tmp_path), workers=1, progress=False)
    sizes = [d.num_nodes for d in whole]
    assert 0 < sum(n > 8 for n in sizes) < len(sizes)
    assert [d.smiles for d in small] == \
        [d.smiles for d, n in zip(whole, sizes) if n <= 8]
    assert f'{sum(n > 8 for n in sizes)} of 200 molecules have more than ' \
        f'8 heavy atoms' in capsys.readouterr().out
    with pytest.raises(ConfigError, match='max_atoms'):
        DatasetSpec('qm9', builtin='qm9', max_atoms=0)
