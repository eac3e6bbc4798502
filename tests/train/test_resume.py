"""A fine-tuning run killed with SIGKILL and rerun with the same command
continues and ends exactly as an uninterrupted run: same per-step losses,
same best epoch, same test metrics."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import SHARED


def _command(csv_path, root, out):
    return [sys.executable, '-m', 'pyg_unimol2.cli', 'finetune',
            '--data', str(csv_path), '--smiles-col', 'smiles',
            '--targets', 'expt:regression,soluble:classification',
            '--preset', 'tiny', '--epochs', '6', '--batch-size', '8',
            '--lr', '5e-4', '--split', 'scaffold', '--conformers', '2',
            '--ema-decay', '0.9', '--ckpt-every', '4', '--root', str(root),
            '--workers', '1', '--threads', '1', '--out', str(out)]


def _train_losses(out):
    lines = [json.loads(x) for x in
             (out / 'metrics.jsonl').read_text().splitlines()]
    return [(r['step'], r['loss']) for r in lines if r['group'] == 'train'], \
        [(r['step'], r['score']) for r in lines if r['group'] == 'valid']


@pytest.fixture(scope='module')
def table(tmp_path_factory):
    """90 FreeSolv molecules: the hydration free energy and a sparse
    binary label (expt < -4 kcal/mol, missing for every third row)."""
    tmp = tmp_path_factory.mktemp('resume')
    with open(SHARED / 'datasets' / 'freesolv' / 'freesolv.csv') as f:
        rows = list(csv.DictReader(f))[:90]
    path = tmp / 'solv.csv'
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['smiles', 'expt', 'soluble'])
        for i, r in enumerate(rows):
            label = '' if i % 3 == 0 else int(float(r['expt']) < -4)
            w.writerow([r['smiles'], r['expt'], label])
    return tmp, path


def test_sigkill_and_rerun_repeats_the_uninterrupted_run(table):
    tmp, path = table
    env = dict(os.environ, PYTHONHASHSEED='0')
    subprocess.run(_command(path, tmp / 'data', tmp / 'full'), check=True,
                   env=env, capture_output=True)
    proc = subprocess.Popen(_command(path, tmp / 'data', tmp / 'killed'),
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = tmp / 'killed' / 'checkpoints'
    deadline = time.time() + 300
    while time.time() < deadline and not (
            ckpt.is_dir() and any(p.name.endswith('.pt')
                                  for p in ckpt.iterdir())):
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp / 'killed' / 'results.json').exists(), \
        'the run finished before it was killed'
    done, _ = _train_losses(tmp / 'killed')
    full_losses, full_valid = _train_losses(tmp / 'full')
    assert 0 < len(done) < len(full_losses)

    resumed = subprocess.run(_command(path, tmp / 'data', tmp / 'killed'),
                             check=True, env=env, capture_output=True,
                             text=True)
    assert 'resuming from' in resumed.stdout
    losses, valid = _train_losses(tmp / 'killed')
    assert [s for s, _ in losses] == [s for s, _ in full_losses]
    for (_, a), (_, b) in zip(losses, full_losses):
        assert a == pytest.approx(b, abs=1e-6)
    assert [s for s, _ in valid] == [s for s, _ in full_valid]
    assert [v for _, v in valid] == pytest.approx([v for _, v in full_valid],
                                                  abs=1e-6)
    a = json.loads((tmp / 'killed' / 'results.json').read_text())
    b = json.loads((tmp / 'full' / 'results.json').read_text())
    assert a['best_epoch'] == b['best_epoch'] and a['steps'] == b['steps']
    for task in ('expt', 'soluble'):
        for metric, value in b['datasets']['data']['test'][task].items():
            assert a['datasets']['data']['test'][task][metric] == \
                pytest.approx(value, abs=1e-6), (task, metric)


def test_rerun_with_other_settings_is_refused(table):
    tmp, path = table
    command = _command(path, tmp / 'data', tmp / 'other')
    command[command.index('--epochs') + 1] = '1'
    subprocess.run(command, check=True, capture_output=True)
    command[command.index('--lr') + 1] = '1e-3'
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode != 0
    assert 'holds a run with other settings (lr)' in run.stderr
