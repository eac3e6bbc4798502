import csv
import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import \
    EventAccumulator
from torch_geometric.loader import DataLoader

from pyg_unimol2.cli import main
from pyg_unimol2.datasets import load_property_dataset
from pyg_unimol2.checkpoints import load_task_model
from pyg_unimol2.train.loop import lr_lambda


def test_schedule_warms_up_then_decays_linearly():
    values = [lr_lambda(s, warmup=4, total=12) for s in range(13)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4:] == pytest.approx([1.0 - k / 8 for k in range(9)])


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A real fine-tuning run through the CLI: tiny preset, 400 QM9
    molecules, HOMO/LUMO/gap jointly, scaffold split."""
    tmp = tmp_path_factory.mktemp('finetune')
    args = ['finetune', '--dataset', 'qm9', '--targets', 'homo,lumo,gap',
            '--subset', '400', '--preset', 'tiny', '--epochs', '4',
            '--batch-size', '16', '--lr', '5e-4', '--split', 'scaffold',
            '--root', str(tmp / 'data'), '--out', str(tmp / 'run'),
            '--workers', '2']
    main(args)
    return tmp, args


def test_run_writes_results_checkpoint_and_split(run):
    tmp, _ = run
    results = json.loads((tmp / 'run' / 'results.json').read_text())
    assert list(results['test_mae']) == ['homo', 'lumo', 'gap']
    assert 1 <= results['best_epoch'] <= 4
    for name, mae in results['test_mae'].items():
        assert 0 < mae < 1.0  # Hartree
        test = results['datasets']['qm9']['test'][name]
        assert test['mae'] == mae and test['count'] == 40
        assert {'rmse', 'r2', 'pearson', 'spearman'} <= set(test)
    split = np.load(tmp / 'run' / 'split_qm9_scaffold_seed0.npz')
    sizes = [len(split[k]) for k in ('train', 'valid', 'test')]
    assert sum(sizes) == 400 and not set(split['train']) & set(split['test'])


def test_tensorboard_logs_losses_lr_and_validation_mae(run):
    tmp, _ = run
    events = EventAccumulator(str(tmp / 'run'))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {'train/loss', 'train/lr', 'train/loss/qm9/gap',
            'valid/qm9/homo/mae', 'valid/qm9/lumo/mae', 'valid/qm9/gap/mae',
            'valid/qm9/gap/spearman', 'valid/score'} <= tags
    assert len(events.Scalars('valid/qm9/gap/mae')) == 4
    losses = [e.value for e in events.Scalars('train/loss')]
    steps = len(losses) // 4
    assert np.mean(losses[-steps:]) < np.mean(losses[:steps])  # it learns
    lrs = [e.value for e in events.Scalars('train/lr')]
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(5e-4) and lrs[-1] < 0.05 * lrs[peak]
    assert np.all(np.diff(lrs[:peak + 1]) > 0)  # warmup
    assert np.all(np.diff(lrs[peak + 1:]) < 0)  # linear decay


def test_checkpoint_reproduces_the_reported_test_mae(run):
    tmp, _ = run
    model = load_task_model(tmp / 'run' / 'best.pt').eval()
    dataset, _, _ = load_property_dataset('qm9', str(tmp / 'data'),
                                          ['homo', 'lumo', 'gap'], subset=400)
    split = np.load(tmp / 'run' / 'split_qm9_scaffold_seed0.npz')
    test = dataset[torch.as_tensor(split['test'])]
    batch = next(iter(DataLoader(test, batch_size=len(test))))
    pred = model.predict(batch)
    mae = (torch.cat([pred[t] for t in ('homo', 'lumo', 'gap')], 1) -
           batch.y).abs().mean(0)
    results = json.loads((tmp / 'run' / 'results.json').read_text())
    expected = torch.tensor([results['test_mae'][t] for t in
                             ('homo', 'lumo', 'gap')])
    torch.testing.assert_close(mae, expected, rtol=1e-4, atol=1e-6)


def test_rerun_reuses_the_saved_split(run, tmp_path):
    tmp, args = run
    path = tmp / 'run' / 'split_qm9_scaffold_seed0.npz'
    before = np.load(path)['test']
    args = list(args)
    args[args.index('--epochs') + 1] = '1'
    args[args.index('--out') + 1] = str(tmp_path / 'again')
    main(args + ['--split-file', str(path)])
    assert np.array_equal(np.load(path)['test'], before)


def test_predict_writes_csv_and_reports_bad_smiles(run, tmp_path, capsys):
    tmp, _ = run
    smiles = tmp_path / 'in.smi'
    smiles.write_text('CCO\nnot_a_smiles\nc1ccncc1\nC1CC\n')
    out = tmp_path / 'pred.csv'
    main(['predict', '--checkpoint', str(tmp / 'run' / 'best.pt'),
          '--smiles', str(smiles), '--out', str(out), '--workers', '1'])
    rows = list(csv.DictReader(open(out)))
    assert [r['smiles'] for r in rows] == ['CCO', 'c1ccncc1']
    assert [int(r['index']) for r in rows] == [0, 2]
    # Gaps of ethanol and pyridine are positive, a few tenths of a Hartree.
    assert all(0.05 < float(r['gap']) < 0.6 for r in rows)
    failures = list(csv.DictReader(open(tmp_path / 'pred.failures.csv')))
    assert [int(f['index']) for f in failures] == [1, 3]
    assert "'not_a_smiles'" in failures[0]['reason']
    assert 'line 2' in capsys.readouterr().out


def test_time_budget_stops_training_early(run, tmp_path):
    tmp, args = run
    args = list(args)
    args[args.index('--out') + 1] = str(tmp_path / 'budget')
    main(args + ['--max-minutes', '0.01'])  # 0.6 s: less than one epoch
    results = json.loads((tmp_path / 'budget' / 'results.json').read_text())
    assert results['epochs_run'] == 1 and results['best_epoch'] == 1
    assert results['steps'] < 20  # stopped inside the first of 4 epochs
