"""PNG plots of runs (pyg_unimol2/plots.py): learning curves written by
real fine-tuning and pretraining runs (after every validation), parity and
ROC/PR plots whose numbers are the project's metrics, the benchmark-table
plots, and runs without matplotlib."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from conftest import SHARED
from pyg_unimol2.bench.results import merge_results, write_results
from pyg_unimol2.cli import main
from pyg_unimol2.plots import (MAX_COLUMNS, PANEL_PIXELS, LearningCurves,
                               parity_plot, pr_curve, prediction_plots,
                               roc_curve, roc_pr_plot)
from pyg_unimol2.pretrain import ObjectiveConfig, PretrainConfig
from pyg_unimol2.pretrain.trainer import pretrain
from pyg_unimol2.tasks.metrics import binary_metrics
from pyg_unimol2.train.loop import LoopConfig, fit

REPO = Path(__file__).resolve().parents[1]
FREESOLV = SHARED / 'datasets' / 'freesolv' / 'freesolv.csv'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _pixels(panels: int, columns: int = MAX_COLUMNS):
    """(height, width) of a figure of :obj:`panels` panels."""
    cols = min(panels, columns)
    rows = -(-panels // cols)
    return rows * PANEL_PIXELS[1], cols * PANEL_PIXELS[0]


def _image(path: Path) -> np.ndarray:
    """The PNG at :obj:`path`, checked to be one, read back by
    matplotlib."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(path)


def _finetune_args(tmp: Path, out: Path):
    return ['finetune', '--data', str(tmp / 'freesolv40.csv'), '--targets',
            'expt:regression,soluble:classification', '--split', 'column',
            '--split-col', 'split', '--preset', 'tiny', '--epochs', '2',
            '--batch-size', '8', '--lr', '5e-4', '--root', str(tmp / 'data'),
            '--workers', '1', '--threads', '1', '--out', str(out)]


@pytest.fixture(scope='module')
def finetuned(tmp_path_factory):
    """A real fine-tuning run: tiny preset, 2 epochs, 40 FreeSolv molecules
    (24/8/8 train/valid/test), hydration free energy (regression) and
    whether it is below the median (classification)."""
    tmp = tmp_path_factory.mktemp('plots')
    with open(FREESOLV, newline='') as f:
        rows = list(csv.DictReader(f))[:40]
    median = np.median([float(r['expt']) for r in rows])
    with open(tmp / 'freesolv40.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['smiles', 'expt', 'soluble', 'split'])
        for i, r in enumerate(rows):
            w.writerow([r['smiles'], r['expt'],
                        int(float(r['expt']) < median),
                        ('train', 'train', 'train', 'valid', 'test')[i % 5]])
    main(_finetune_args(tmp, tmp / 'run'))
    return tmp


def test_finetune_run_writes_learning_curves(finetuned):
    run = finetuned / 'run'
    # Panels: train loss; valid expt mae/rmse/r2/pearson/spearman, soluble
    # auroc/average_precision/accuracy, score (the counts left out).
    assert _image(run / 'learning_curves.png').shape == _pixels(10) + (4,) \
        == (720, 1280, 4)
    assert sorted(p.name for p in run.glob('*.png')) == \
        ['learning_curves.png']
    assert not list(run.glob('.*.tmp'))


class _Batches:
    """A fixed list of micro-batches (a :class:`BatchSource`)."""
    def __init__(self, batches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def iterate(self, epoch: int, start: int = 0):
        return iter(self.batches[start:])


def test_curves_are_current_after_every_validation(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(32, 1)
    batches = [(x[i:i + 8], 3 * x[i:i + 8]) for i in range(0, 32, 8)]
    model = torch.nn.Linear(1, 1)
    png = tmp_path / 'learning_curves.png'
    seen = []

    def loss_fn(model, batch):
        return ((model(batch[0]) - batch[1]) ** 2).mean(), {}

    def evaluate(model):
        seen.append(_image(png).shape if png.exists() else None)
        with torch.no_grad():
            mse = float(((model(x) - 3 * x) ** 2).mean())
        return mse, {'mse': mse}

    fit(model, _Batches(batches), loss_fn, evaluate,
        LoopConfig(epochs=3, lr=0.05, warmup_ratio=0.0, out=str(tmp_path),
                   progress=False))
    # A run killed in epoch 2 or 3 leaves the plot of the epochs before.
    assert seen == [None, _pixels(3) + (4,), _pixels(3) + (4,)]
    assert _image(png).shape == _pixels(3) + (4,)


def test_a_plotting_error_is_a_warning(finetuned):
    blocked = finetuned / 'not_a_folder'
    blocked.write_text('a file where the PNG folder should be')
    curves = LearningCurves(finetuned / 'run' / 'metrics.jsonl',
                            blocked / 'learning_curves.png')
    with pytest.warns(UserWarning, match='learning curves not written'):
        assert curves.write() is None


def test_parity_plot_reports_the_mae_of_observed_labels(tmp_path):
    true = [0.0, 1.0, 2.0, 3.0, float('nan')]
    pred = [0.5, 1.0, 2.0, 4.0, 7.0]
    maes = parity_plot([('a', true, pred), ('b', pred[:4], pred[:4]),
                        ('c', [1.0, 2.0], [2.0, 4.0])],
                       tmp_path / 'parity.png')
    assert maes == pytest.approx([0.375, 0.0, 1.5])
    assert _image(tmp_path / 'parity.png').shape == (240, 960, 4)


def test_roc_curve_with_ties_by_hand():
    fpr, tpr = roc_curve([0.9, 0.8, 0.8, 0.1], [True, False, True, False])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.875)
    recall, precision = pr_curve([0.9, 0.8, 0.8, 0.1],
                                 [True, False, True, False])
    np.testing.assert_allclose(recall, [0.5, 1, 1])
    np.testing.assert_allclose(precision, [1, 2 / 3, 0.5])


def test_roc_and_pr_areas_equal_the_project_metrics(tmp_path):
    rng = np.random.default_rng(0)
    target = (rng.random(300) < 0.3).astype(float)
    score = np.round(rng.random(300) + 0.4 * target, 1)  # many ties
    target[::17] = np.nan  # missing labels are left out
    observed = np.isfinite(target)
    expected = binary_metrics(score, target)
    fpr, tpr = roc_curve(score[observed], target[observed] == 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected['auroc'],
                                                   abs=1e-12)
    recall, precision = pr_curve(score[observed], target[observed] == 1)
    assert np.sum(np.diff(recall, prepend=0.0) * precision) == \
        pytest.approx(expected['average_precision'], abs=1e-12)
    areas = roc_pr_plot([('random', target, score),
                         ('one class', np.ones(5), np.arange(5.0)),
                         ('flipped', 1 - target, -score)],
                        tmp_path / 'roc_pr.png')
    # The one-class series has no curves; flipping labels and scores keeps
    # the AUROC.
    assert [a['auroc'] for a in areas] == \
        pytest.approx([expected['auroc']] * 2)
    assert areas[0]['average_precision'] == \
        pytest.approx(expected['average_precision'])
    assert _image(tmp_path / 'roc_pr.png').shape == \
        _pixels(4, columns=2) + (4,) == (480, 640, 4)


def _record(run: Path, seed: int):
    results = json.loads((run / 'results.json').read_text())
    return [dict(model='Uni-Mol2 tiny', mae={'expt': [
        results['test_mae']['expt']]}, runs=[dict(
            task=['expt'], seed=seed, epochs_run=2, best_epoch=1, seconds=1.0,
            out=str(run))])]


def test_benchmark_tables_get_parity_and_roc_pr_plots(finetuned, tmp_path):
    run = finetuned / 'run'
    for seed in (0, 1):
        write_results(str(tmp_path / f's{seed}'), 'bench', 'FreeSolv',
                      _record(run, seed), ['expt'], {'expt': 'kcal/mol'},
                      'table6', 'cmd', dict(budget='2 epochs'))
    assert _image(tmp_path / 's0' / 'bench_parity.png').shape == \
        (240, 320, 4)
    assert _image(tmp_path / 's0' / 'bench_roc_pr.png').shape == \
        (240, 640, 4)
    merge_results([str(tmp_path / f's{s}' / 'bench.json') for s in (0, 1)],
                  str(tmp_path), 'merged')
    assert _image(tmp_path / 'merged_parity.png').shape == (240, 320, 4)
    # Runs whose directories are gone have nothing to plot.
    assert prediction_plots({'gone': [tmp_path / 'no_run']},
                            tmp_path / 'gone') == []


def test_without_matplotlib_the_run_completes_with_one_warning(finetuned,
                                                               tmp_path):
    out = tmp_path / 'run'
    code = ('import sys; sys.modules["matplotlib"] = None\n'
            'from pyg_unimol2.cli import main\n'
            f'main({_finetune_args(finetuned, out)!r})\n'
            'from pyg_unimol2.plots import prediction_plots\n'
            f'assert prediction_plots({{"m": [{str(out)!r}]}}, '
            f'{str(out / "table")!r}) == []\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / 'results.json').read_text())['epochs_run'] == 2
    assert not list(out.glob('*.png'))
    assert proc.stderr.count('UserWarning: matplotlib is not installed') == 1


def test_pretrain_run_writes_learning_curves(store, tmp_path):
    config = PretrainConfig(
        store=str(store), out=str(tmp_path / 'run'),
        preset='tiny', max_steps=4, warmup_steps=2, lr=5e-4, max_tokens=160,
        valid_fraction=0.1, valid_every=2, ckpt_every=4, log_every=1,
        progress=False, objective=ObjectiveConfig.official())
    pretrain(config)
    # Panels: train loss; valid loss, atom, coord, dist, acc.
    assert _image(tmp_path / 'run' / 'learning_curves.png').shape == \
        _pixels(6) + (4,) == (480, 1280, 4)
