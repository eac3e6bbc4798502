r"""Evaluation metrics of a :class:`~pyg_unimol2.tasks.Task`, with missing
labels (``NaN``) left out.

Every function takes numpy arrays, torch tensors or sequences, counts only
the entries whose target is finite, and returns plain floats. A metric that
is undefined on the observed labels (a correlation of fewer than two labels
or of a constant, an AUROC with one class only) is ``NaN``: these functions
never raise on degenerate data, only on inputs of the wrong shape or labels
outside the task's classes.

The ranking metrics follow scikit-learn's definitions exactly (scikit-learn
is not needed): ``auroc`` is ``roc_auc_score`` (the Mann-Whitney statistic,
tied scores counting one half) and ``average_precision`` is
``average_precision_score`` (:math:`\sum_n (R_n - R_{n-1}) P_n` over the
distinct scores as thresholds, highest first).

:func:`task_metrics` takes a model's predictions (label units, or
probabilities for classification kinds); :func:`selection_score` reduces the metrics to the number the best
epoch minimises.
"""
import math
from typing import Dict, List

import numpy as np
import torch
from scipy.stats import rankdata

from .task import Task

__all__ = ['regression_metrics', 'binary_metrics', 'multiclass_metrics',
           'multilabel_metrics', 'task_metrics', 'selection_score']

NAN = float('nan')


def _array(values, ndim: int, name: str) -> np.ndarray:
    """:obj:`values` as a float64 array of :obj:`ndim` dimensions (a
    trailing axis of size one is dropped for vectors)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if ndim == 1 and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != ndim:
        raise ValueError(f'{name} must have {ndim} dimension(s), got shape '
                         f'{array.shape}')
    return array


def _check_rows(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f'predictions and targets differ in length: '
                         f'{a.shape[0]} vs {b.shape[0]}')


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; ``NaN`` for fewer than two points or a constant
    input."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return NAN
    dx, dy = x - x.mean(), y - y.mean()
    r = np.dot(dx, dy) / math.sqrt(np.dot(dx, dx) * np.dot(dy, dy))
    return float(np.clip(r, -1.0, 1.0))


def _mean(values: List[float]) -> float:
    """Mean of the values that are not ``NaN`` (``NaN`` if none are)."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else NAN


def regression_metrics(pred, target) -> Dict[str, float]:
    r"""Regression metrics over the entries with a finite target.

    Args:
        pred (array-like): predictions in label units, shape ``[N]`` (or
            ``[N, 1]``).
        target (array-like): labels, shape ``[N]`` (or ``[N, 1]``),
            ``NaN`` where missing.

    Returns:
        Dict[str, float]: ``mae``, ``rmse``, ``r2``
        (:math:`1 - SS_{res} / SS_{tot}`), ``pearson``, ``spearman``
        (Pearson of average ranks) and ``count`` (observed labels). With no
        observed label every metric is ``NaN``; ``r2`` is ``NaN`` for a
        constant target, the correlations for fewer than two labels or a
        constant target or prediction.
    """
    pred, target = _array(pred, 1, 'pred'), _array(target, 1, 'target')
    _check_rows(pred, target)
    observed = np.isfinite(target)
    p, t = pred[observed], target[observed]
    out = dict(mae=NAN, rmse=NAN, r2=NAN, pearson=NAN, spearman=NAN,
               count=float(len(t)))
    if len(t) == 0:
        return out
    err = p - t
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    out.update(mae=float(np.mean(np.abs(err))),
               rmse=math.sqrt(float(np.mean(err ** 2))),
               r2=1.0 - float(np.sum(err ** 2)) / ss_tot if ss_tot > 0
               else NAN,
               pearson=_pearson(p, t),
               spearman=_pearson(rankdata(p), rankdata(t)))
    return out


def _binary_labels(target: np.ndarray) -> np.ndarray:
    """Observed binary labels as booleans; anything but 0/1 is an error."""
    if not np.isin(target, (0.0, 1.0)).all():
        bad = target[~np.isin(target, (0.0, 1.0))][0]
        raise ValueError(f'binary labels must be 0 or 1, got {bad}')
    return target == 1.0


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    rank_sum = float(rankdata(score)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """scikit-learn's average precision: one threshold per distinct score,
    highest first, each adding its recall step times its precision."""
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        return NAN
    order = np.argsort(-score, kind='stable')
    score, positive = score[order], positive[order]
    # Last position of each run of equal scores: all tied items pass the
    # threshold together.
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tp = np.cumsum(positive)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def binary_metrics(prob, target) -> Dict[str, float]:
    r"""Binary classification metrics over the entries with a finite
    target.

    Args:
        prob (array-like): probabilities (or any scores, for ``auroc`` and
            ``average_precision``) of the positive class, shape ``[N]`` (or
            ``[N, 1]``).
        target (array-like): labels ``0``/``1``, shape ``[N]`` (or
            ``[N, 1]``), ``NaN`` where missing.

    Returns:
        Dict[str, float]: ``auroc``, ``average_precision``, ``accuracy``
        (``prob >= 0.5`` predicts the positive class) and ``count``
        (observed labels). ``auroc`` and ``average_precision`` are ``NaN``
        unless both classes are observed; ``accuracy`` is ``NaN`` without
        observed labels.
    """
    prob, target = _array(prob, 1, 'prob'), _array(target, 1, 'target')
    _check_rows(prob, target)
    observed = np.isfinite(target)
    p, positive = prob[observed], _binary_labels(target[observed])
    return dict(auroc=_auroc(p, positive),
                average_precision=_average_precision(p, positive),
                accuracy=float(np.mean((p >= 0.5) == positive))
                if len(p) else NAN,
                count=float(len(p)))


def multiclass_metrics(prob, target) -> Dict[str, float]:
    r"""Multi-class metrics over the entries with a finite target.

    Args:
        prob (array-like): class probabilities, shape ``[N, K]``.
        target (array-like): class indices ``0..K-1``, shape ``[N]`` (or
            ``[N, 1]``), ``NaN`` where missing.

    Returns:
        Dict[str, float]: ``accuracy`` (of the most probable class),
        ``auroc`` and ``average_precision`` (macro means of the one-vs-rest
        binary metrics over the classes observed both as positives and as
        negatives; ``NaN`` if there is none) and ``count`` (observed
        labels).
    """
    prob, target = _array(prob, 2, 'prob'), _array(target, 1, 'target')
    _check_rows(prob, target)
    observed = np.isfinite(target)
    p, t = prob[observed], target[observed]
    num_classes = prob.shape[1]
    if not np.isin(t, np.arange(num_classes)).all():
        bad = t[~np.isin(t, np.arange(num_classes))][0]
        raise ValueError(f'class indices must be integers in '
                         f'0..{num_classes - 1}, got {bad}')
    one_vs_rest = [(p[:, c], t == c) for c in range(num_classes)]
    return dict(accuracy=float(np.mean(p.argmax(axis=1) == t))
                if len(t) else NAN,
                auroc=_mean([_auroc(s, y) for s, y in one_vs_rest]),
                average_precision=_mean([_average_precision(s, y)
                                         for s, y in one_vs_rest]),
                count=float(len(t)))


def multilabel_metrics(prob, target) -> Dict[str, float]:
    r"""Multi-label metrics: each label is a binary task over its own
    observed entries.

    Args:
        prob (array-like): probabilities of each label, shape ``[N, K]``.
        target (array-like): labels ``0``/``1``, shape ``[N, K]``, ``NaN``
            where missing.

    Returns:
        Dict[str, float]: ``auroc`` and ``average_precision`` (macro means
        over the labels where they are defined, ``NaN`` if none is),
        ``accuracy`` (``prob >= 0.5``, over all observed entries) and
        ``count`` (observed entries).
    """
    prob, target = _array(prob, 2, 'prob'), _array(target, 2, 'target')
    if prob.shape != target.shape:
        raise ValueError(f'prob and target differ in shape: {prob.shape} vs '
                         f'{target.shape}')
    per_label = [binary_metrics(prob[:, j], target[:, j])
                 for j in range(prob.shape[1])]
    observed = np.isfinite(target)
    positive = _binary_labels(target[observed])
    return dict(auroc=_mean([m['auroc'] for m in per_label]),
                average_precision=_mean([m['average_precision']
                                         for m in per_label]),
                accuracy=float(np.mean((prob[observed] >= 0.5) == positive))
                if observed.any() else NAN,
                count=float(observed.sum()))


def task_metrics(task: Task, prediction, target) -> Dict[str, float]:
    r"""The metrics of :obj:`task` from its predictions.

    Args:
        task (Task): the task.
        prediction (array-like): predictions in label units for regression
            (``[N]`` or ``[N, 1]``); probabilities of the positive class for
            classification (``[N]`` or ``[N, 1]``), of each class for
            multi-class (``[N, K]``) and of each label for multi-label
            (``[N, K]``) tasks (what
            :meth:`~pyg_unimol2.models.multitask.TaskModel.predict` gives).
        target (array-like): the task's labels as encoded by
            :func:`~pyg_unimol2.tasks.encode_label` (``[N]``/``[N, 1]``,
            or ``[N, K]`` for multi-label), ``NaN`` where missing.

    Returns:
        Dict[str, float]: :attr:`Task.metrics` first, in that order, then
        the other metrics of the kind and ``count``.
    """
    compute = {'regression': regression_metrics,
               'classification': binary_metrics,
               'multiclass': multiclass_metrics,
               'multilabel': multilabel_metrics}[task.kind]
    values = compute(prediction, target)
    return {**{name: values[name] for name in task.metrics}, **values}


def selection_score(task: Task, metrics: Dict[str, float],
                    std: float = 1.0) -> float:
    r"""The number model selection minimises.

    Args:
        task (Task): the task.
        metrics (Dict[str, float]): its metrics (:func:`task_metrics`).
        std (float): scale of the regression labels (the z-score standard
            deviation), so that tasks in different units compare.
            (default: :obj:`1.0`)

    Returns:
        float: ``mae / std`` for regression; ``1 - auroc`` for
        classification kinds, ``1 - accuracy`` where the AUROC is ``NaN``
        (or not computed), ``NaN`` if both are.

    Raises:
        ValueError: :obj:`metrics` lacks the metric the score needs
            (``mae``; ``auroc`` or ``accuracy``), or :obj:`std` is not
            positive.
    """
    if task.kind == 'regression':
        if 'mae' not in metrics:
            raise ValueError(f"task '{task.name}': model selection needs "
                             f"the 'mae' metric, got {sorted(metrics)}")
        if not std > 0:
            raise ValueError(f'std must be positive, got {std}')
        return metrics['mae'] / std
    if 'auroc' not in metrics and 'accuracy' not in metrics:
        raise ValueError(f"task '{task.name}': model selection needs the "
                         f"'auroc' or 'accuracy' metric, got "
                         f"{sorted(metrics)}")
    for name in ('auroc', 'accuracy'):
        value = metrics.get(name, NAN)
        if not math.isnan(value):
            return 1.0 - value
    return NAN
