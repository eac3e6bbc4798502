import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyg_unimol2.tasks import Task
from pyg_unimol2.tasks.metrics import (binary_metrics, multiclass_metrics,
                                       multilabel_metrics, regression_metrics,
                                       selection_score, task_metrics)


def brute_auroc(score, y):
    """Fraction of (positive, negative) pairs ranked correctly, ties 1/2."""
    pos = [s for s, t in zip(score, y) if t == 1]
    neg = [s for s, t in zip(score, y) if t == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    return sum(pairs) / len(pairs)


def brute_ap(score, y):
    """sum over distinct thresholds (high to low) of (R_n - R_{n-1}) P_n."""
    n_pos = sum(y)
    ap, prev_recall = 0.0, 0.0
    for thr in sorted(set(score), reverse=True):
        chosen = [t for s, t in zip(score, y) if s >= thr]
        precision, recall = sum(chosen) / len(chosen), sum(chosen) / n_pos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def same(a, b):
    """Dicts of floats equal to rounding, NaN equal to NaN."""
    assert a.keys() == b.keys()
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or \
            a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12), k


def test_known_binary_values():
    m = binary_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert m['auroc'] == pytest.approx(0.75)
    assert m['average_precision'] == pytest.approx(5 / 6)
    assert m['accuracy'] == pytest.approx(0.75) and m['count'] == 4


@pytest.mark.parametrize('seed', range(5))
def test_binary_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    score = rng.integers(0, 6, 40) / 5  # many ties
    m = binary_metrics(score, y)
    assert m['auroc'] == pytest.approx(brute_auroc(score, y))
    assert m['average_precision'] == pytest.approx(brute_ap(score, y))
    assert m['accuracy'] == pytest.approx(np.mean((score >= 0.5) == y))


def test_binary_matches_sklearn_when_available():
    sk = pytest.importorskip('sklearn.metrics')
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200), 1)
    m = binary_metrics(score, y)
    assert m['auroc'] == pytest.approx(sk.roc_auc_score(y, score))
    assert m['average_precision'] == pytest.approx(
        sk.average_precision_score(y, score))


def test_regression_matches_definitions_and_scipy():
    rng = np.random.default_rng(1)
    t = rng.normal(size=50)
    p = t + rng.normal(scale=0.5, size=50)
    p[:5] = p[0]  # ties in the ranks
    m = regression_metrics(p, t)
    assert m['mae'] == pytest.approx(np.mean(np.abs(p - t)))
    assert m['rmse'] == pytest.approx(np.sqrt(np.mean((p - t) ** 2)))
    assert m['r2'] == pytest.approx(
        1 - np.sum((p - t) ** 2) / np.sum((t - t.mean()) ** 2))
    assert m['pearson'] == pytest.approx(stats.pearsonr(p, t)[0])
    assert m['spearman'] == pytest.approx(stats.spearmanr(p, t)[0])
    assert m['count'] == 50


def test_regression_accepts_torch_and_columns():
    t = torch.tensor([[1.0], [2.0], [4.0]])
    p = torch.tensor([1.5, 2.0, 3.0], dtype=torch.float64)
    m = regression_metrics(p, t)
    assert m['mae'] == pytest.approx(0.5) and m['count'] == 3


def test_nan_targets_are_left_out_exactly():
    rng = np.random.default_rng(2)
    n = 60
    missing = rng.random(n) < 0.3
    t = rng.normal(size=n)
    p = rng.normal(size=n)
    t_nan = np.where(missing, np.nan, t)
    same(regression_metrics(p, t_nan),
         regression_metrics(p[~missing], t[~missing]))
    yb = rng.integers(0, 2, n).astype(float)
    same(binary_metrics(p, np.where(missing, np.nan, yb)),
         binary_metrics(p[~missing], yb[~missing]))
    prob = rng.dirichlet(np.ones(3), n)
    yc = rng.integers(0, 3, n).astype(float)
    same(multiclass_metrics(prob, np.where(missing, np.nan, yc)),
         multiclass_metrics(prob[~missing], yc[~missing]))


def test_degenerate_inputs_give_nan():
    m = regression_metrics([1.0], [2.0])
    assert m['mae'] == 1.0 and math.isnan(m['pearson']) and \
        math.isnan(m['spearman']) and math.isnan(m['r2'])
    m = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])  # constant
    assert math.isnan(m['r2']) and math.isnan(m['pearson'])
    m = regression_metrics([1.0, 1.0], [1.0, 2.0])  # constant prediction
    assert math.isnan(m['pearson']) and math.isnan(m['spearman'])
    m = regression_metrics([1.0, 2.0], [np.nan, np.nan])
    assert m['count'] == 0 and all(math.isnan(m[k]) for k in
                                   ('mae', 'rmse', 'r2', 'pearson'))
    m = binary_metrics([0.2, 0.9, 0.7], [1, 1, 1])
    assert math.isnan(m['auroc']) and math.isnan(m['average_precision'])
    assert m['accuracy'] == pytest.approx(2 / 3)
    m = binary_metrics([0.2], [np.nan])
    assert m['count'] == 0 and math.isnan(m['accuracy'])
    m = multiclass_metrics(np.full((2, 3), 1 / 3), [1, 1])
    assert math.isnan(m['auroc']) and m['count'] == 2
    m = multilabel_metrics(np.full((2, 2), 0.5), np.full((2, 2), np.nan))
    assert m['count'] == 0 and math.isnan(m['auroc']) and \
        math.isnan(m['accuracy'])


def test_labels_outside_the_classes_are_errors():
    with pytest.raises(ValueError, match='0 or 1'):
        binary_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match='0..2'):
        multiclass_metrics(np.full((2, 3), 1 / 3), [0, 3])
    with pytest.raises(ValueError, match='differ in length'):
        regression_metrics([1.0, 2.0], [1.0])


def test_multiclass_is_macro_one_vs_rest_over_present_classes():
    rng = np.random.default_rng(3)
    prob = rng.dirichlet(np.ones(4), 30)
    y = rng.integers(0, 3, 30)  # class 3 never occurs
    m = multiclass_metrics(prob, y)
    assert m['accuracy'] == pytest.approx(np.mean(prob.argmax(1) == y))
    assert m['auroc'] == pytest.approx(np.mean(
        [brute_auroc(prob[:, c], (y == c).astype(int)) for c in range(3)]))
    assert m['average_precision'] == pytest.approx(np.mean(
        [brute_ap(prob[:, c], (y == c).astype(int)) for c in range(3)]))


def test_multilabel_is_macro_over_labels_with_own_observed_entries():
    rng = np.random.default_rng(4)
    prob = rng.random((40, 3))
    y = rng.integers(0, 2, (40, 3)).astype(float)
    y[rng.random((40, 3)) < 0.25] = np.nan
    y[:, 2] = np.where(np.isnan(y[:, 2]), np.nan, 1.0)  # one class only
    m = multilabel_metrics(prob, y)
    per = [binary_metrics(prob[:, j], y[:, j]) for j in range(3)]
    assert m['auroc'] == pytest.approx((per[0]['auroc'] + per[1]['auroc']) / 2)
    assert m['average_precision'] == pytest.approx(
        (per[0]['average_precision'] + per[1]['average_precision']) / 2)
    obs = ~np.isnan(y)
    assert m['accuracy'] == pytest.approx(np.mean((prob[obs] >= 0.5) == y[obs]))
    assert m['count'] == obs.sum()


def test_task_metrics_dispatch_on_kind_declared_metrics_first():
    rng = np.random.default_rng(5)
    prob = rng.uniform(size=(20, 1))
    y = rng.integers(0, 2, (20, 1)).astype(float)
    task = Task('bbbp', kind='classification')
    m = task_metrics(task, torch.tensor(prob), y)
    assert list(m) == ['auroc', 'average_precision', 'accuracy', 'count']
    same(m, binary_metrics(prob[:, 0], y[:, 0]))

    prob = rng.dirichlet(np.ones(3), size=20)
    y = rng.integers(0, 3, 20).astype(float)
    task = Task('c', kind='multiclass', classes=['a', 'b', 'c'],
                metrics=['auroc'])
    m = task_metrics(task, prob, y)
    assert list(m)[0] == 'auroc'
    same(m, multiclass_metrics(prob, y))

    prob = rng.uniform(size=(20, 3))
    y = rng.integers(0, 2, (20, 3)).astype(float)
    task = Task('tox', kind='multilabel', columns=['a', 'b', 'c'])
    same(task_metrics(task, prob, y), multilabel_metrics(prob, y))

    task = Task('gap', kind='regression', metrics=['rmse', 'mae'])
    m = task_metrics(task, [1.0, 2.0], [[1.0], [3.0]])
    assert list(m)[:2] == ['rmse', 'mae'] and m['mae'] == 0.5
    assert m['count'] == 2 and 'spearman' in m


def test_selection_score():
    reg = Task('gap')
    assert selection_score(reg, dict(mae=0.4, count=3), std=2.0) == 0.2
    cls = Task('bbbp', kind='classification')
    assert selection_score(cls, dict(auroc=0.9, accuracy=0.7)) == \
        pytest.approx(0.1)
    assert selection_score(cls, dict(auroc=math.nan, accuracy=0.7)) == \
        pytest.approx(0.3)
    assert math.isnan(selection_score(cls, dict(auroc=math.nan,
                                                accuracy=math.nan)))
    with pytest.raises(ValueError, match="'mae'"):
        selection_score(reg, dict(rmse=1.0))
