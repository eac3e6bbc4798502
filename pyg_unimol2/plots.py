r"""PNG plots of runs: learning curves, parity plots, ROC and PR curves.

* :class:`LearningCurves`: ``learning_curves.png`` of a run's
  ``metrics.jsonl`` (training loss per step, every validation metric per
  epoch or step), redrawn by fine-tuning (:func:`pyg_unimol2.train.loop.fit`)
  and pretraining (:func:`pyg_unimol2.pretrain.trainer.pretrain`, rank 0)
  after every validation and at the end, so that a killed run has current
  plots.
* :func:`parity_plot`, :func:`roc_pr_plot`: test predictions against labels
  (regression: predicted vs true with the MAE; classification: ROC and PR
  curves with their areas, :func:`roc_curve` and :func:`pr_curve`).
* :func:`prediction_plots`: both, from the ``test_predictions_*.csv`` of
  fine-tuning runs, pooled per model (the benchmark tables,
  :mod:`pyg_unimol2.bench.results`).

matplotlib is optional (``pip install .[plots]``): it is imported when a
plot is drawn, through its Agg canvas (the global backend of the process
is left alone); without it one warning says so and nothing is drawn.
Figures are ``ceil(n / 4)`` rows of at most :data:`MAX_COLUMNS` panels of
:data:`PANEL_PIXELS`, written to a temporary file and renamed (a kill
leaves the old PNG or the new one).
"""
import csv
import functools
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from .tasks import task_from_dict
from .tasks.metrics import binary_metrics, regression_metrics

__all__ = ['LearningCurves', 'parity_plot', 'roc_curve', 'pr_curve',
           'roc_pr_plot', 'prediction_plots', 'PANEL_PIXELS', 'MAX_COLUMNS']

#: Width and height of one panel in pixels (at :data:`DPI`).
PANEL_PIXELS = (320, 240)
#: Panels per figure row.
MAX_COLUMNS = 4
DPI = 100
#: Validation entries that are not metrics (last ``/`` part of the name).
NOT_METRICS = ('count', 'epoch', 'molecules')
#: Training-loss points drawn at most (longer runs: means of equal bins).
MAX_POINTS = 2000
#: ``(label, a, b)``: one panel's label and its two arrays.
Series = Tuple[str, ArrayLike, ArrayLike]
PathLike = Union[str, os.PathLike]


@functools.lru_cache(maxsize=None)
def _matplotlib() -> Optional[Tuple[type, type]]:
    """``(Figure, FigureCanvasAgg)``, or :obj:`None` with one warning per
    process when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn('matplotlib is not installed: no PNG plots are written '
                      '(pip install .[plots])')
        return None
    return Figure, FigureCanvasAgg


def _figure(panels: int, columns: int = MAX_COLUMNS):
    """A figure of :obj:`panels` panels and its axes (row-major; unused
    ones hidden), or :obj:`None` without matplotlib."""
    backend = _matplotlib()
    if backend is None:
        return None
    Figure, Canvas = backend
    cols = min(panels, columns)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(cols * PANEL_PIXELS[0] / DPI,
                          rows * PANEL_PIXELS[1] / DPI), dpi=DPI)
    Canvas(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _save(fig, png: Path) -> Path:
    """Writes :obj:`fig` (small fonts) to a temporary file, then renames
    it to :obj:`png`."""
    for ax in fig.axes:
        ax.title.set_fontsize(8)
        ax.xaxis.label.set_fontsize(7)
        ax.yaxis.label.set_fontsize(7)
        ax.tick_params(which='both', labelsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f'.{png.name}.tmp')
    fig.savefig(tmp, format='png', dpi=DPI)
    os.replace(tmp, png)
    return png


def _downsample(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray,
                                                       np.ndarray]:
    """At most :data:`MAX_POINTS` points: means over equal bins."""
    if len(x) <= MAX_POINTS:
        return x, y
    bins = np.array_split(np.arange(len(x)), MAX_POINTS // 2)
    return (np.array([x[b].mean() for b in bins]),
            np.array([np.nanmean(y[b]) for b in bins]))


def _parse(record: Dict[str, Any]) -> Tuple[str, Dict[str, float]]:
    """``(group, numbers)`` of a ``metrics.jsonl`` line: fine-tuning lines
    name their ``group``; pretraining lines prefix validation keys with
    ``valid_``."""
    numbers = {k: float(v) for k, v in record.items()
               if isinstance(v, (int, float)) and k not in ('step', 'group')}
    if 'group' in record:
        return record['group'], numbers
    if any(k.startswith('valid_') for k in numbers):
        return 'valid', {k[len('valid_'):]: v for k, v in numbers.items()
                         if k.startswith('valid_')}
    return 'train', numbers


class LearningCurves:
    r"""The learning curves of a run, drawn from its ``metrics.jsonl``.

    Every :meth:`write` reads the lines appended since the last one and
    redraws :obj:`png`: the training ``loss`` per step (log scale when it
    spans more than a decade) and one panel per validation metric, in the
    order logged (per epoch when the validation lines name their
    ``epoch``, else per step); the entries of :data:`NOT_METRICS` are left
    out.

    Args:
        metrics (str or Path): the run's ``metrics.jsonl``.
        png (str or Path): the figure to write.
    """
    def __init__(self, metrics: PathLike, png: PathLike) -> None:
        self.metrics, self.png = Path(metrics), Path(png)
        self._offset = 0
        self._train: Tuple[List[float], List[float]] = ([], [])
        self._valid: Dict[str, Tuple[List[float], List[float]]] = {}
        self._valid_x = 'step'
        self._drawn = -1

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({str(self.png)!r})'

    def _read(self) -> None:
        if not self.metrics.exists():
            return
        with open(self.metrics, 'rb') as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b'\n') + 1
        self._offset += end
        for line in chunk[:end].decode().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            group, numbers = _parse(record)
            if group == 'train' and 'loss' in numbers:
                self._train[0].append(record['step'])
                self._train[1].append(numbers['loss'])
            elif group == 'valid':
                self._valid_x = 'epoch' if 'epoch' in numbers else 'step'
                x = numbers.get('epoch', record['step'])
                for key, value in numbers.items():
                    if key.rsplit('/', 1)[-1] not in NOT_METRICS:
                        xs, ys = self._valid.setdefault(key, ([], []))
                        xs.append(x)
                        ys.append(value)

    def write(self) -> Optional[Path]:
        """Redraws :obj:`png` if there are new records; never raises (a
        failure is a warning).

        Returns:
            Path: the PNG, or :obj:`None` if nothing was written.
        """
        try:
            self._read()
            if self._offset == self._drawn:
                return None
            path = self._draw()
            self._drawn = self._offset
            return path
        except Exception as e:  # a plot must never fail a run
            warnings.warn(f'{self.png}: learning curves not written '
                          f'({type(e).__name__}: {e})', stacklevel=2)
            return None

    def _draw(self) -> Optional[Path]:
        made = _figure(1 + len(self._valid))
        if made is None:
            return None
        fig, axes = made
        steps, loss = (np.asarray(v, dtype=float) for v in self._train)
        loss[~np.isfinite(loss)] = np.nan
        x, y = _downsample(steps, loss)
        axes[0].plot(x, y, lw=0.8)
        if len(y) and np.nanmin(y) > 0 and np.nanmax(y) > 10 * np.nanmin(y):
            axes[0].set_yscale('log')
        axes[0].set(title='train loss', xlabel='step')
        axes[0].xaxis.get_major_locator().set_params(integer=True)
        for ax, (key, (xs, ys)) in zip(axes[1:], self._valid.items()):
            ax.plot(xs, ys, marker='o', ms=3, lw=1)
            ax.set(title=f'valid {key}', xlabel=self._valid_x)
            ax.xaxis.get_major_locator().set_params(integer=True)
        return _save(fig, self.png)


def parity_plot(series: Sequence[Series], png: PathLike
                ) -> Optional[List[float]]:
    r"""Predicted against true values, one panel per series, the MAE in
    its title (entries with a missing label left out).

    Args:
        series (Sequence[Tuple[str, array-like, array-like]]): ``(label,
            true, predicted)`` per panel.
        png (str or Path): the figure to write.

    Returns:
        List[float]: the MAE of every series
        (:func:`~pyg_unimol2.tasks.metrics.regression_metrics`), or
        :obj:`None` without matplotlib.
    """
    made = _figure(len(series)) if series else None
    if made is None:
        return None
    fig, axes = made
    maes = []
    for ax, (label, true, pred) in zip(axes, series):
        true, pred = np.asarray(true, float), np.asarray(pred, float)
        mae = regression_metrics(pred, true)['mae']
        keep = np.isfinite(true)
        ax.scatter(true[keep], pred[keep], s=6, alpha=0.6)
        if keep.any():
            low = min(true[keep].min(), pred[keep].min())
            high = max(true[keep].max(), pred[keep].max())
            ax.plot([low, high], [low, high], 'k--', lw=0.8)
        ax.set(title=f'{label}\nMAE {mae:.4g}', xlabel='true',
               ylabel='predicted')
        maes.append(mae)
    _save(fig, Path(png))
    return maes


def _counts(score: ArrayLike, positive: ArrayLike
            ) -> Tuple[np.ndarray, np.ndarray]:
    """True and false positives at every distinct score as the threshold,
    highest first (tied scores pass together)."""
    score = np.asarray(score, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-score, kind='stable')
    score, positive = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tp = np.cumsum(positive)[last]
    return tp, last + 1 - tp


def roc_curve(score: ArrayLike, positive: ArrayLike
              ) -> Tuple[np.ndarray, np.ndarray]:
    r"""The ROC curve from ``(0, 0)``: false and true positive rates at
    every distinct score as the threshold. Its trapezoidal area is the
    AUROC of :func:`~pyg_unimol2.tasks.metrics.binary_metrics` (ties
    counting one half).

    Args:
        score (array-like): scores of the positive class, shape ``[N]``.
        positive (array-like): booleans, both classes present, ``[N]``.

    Returns:
        Tuple[np.ndarray, np.ndarray]: ``(fpr, tpr)``.
    """
    tp, fp = _counts(score, positive)
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def pr_curve(score: ArrayLike, positive: ArrayLike
             ) -> Tuple[np.ndarray, np.ndarray]:
    r"""Recall and precision at every distinct score as the threshold,
    highest first: :math:`\sum_n (R_n - R_{n-1}) P_n` is the
    ``average_precision`` of
    :func:`~pyg_unimol2.tasks.metrics.binary_metrics`.

    Args:
        score (array-like): scores of the positive class, shape ``[N]``.
        positive (array-like): booleans, some positive, ``[N]``.

    Returns:
        Tuple[np.ndarray, np.ndarray]: ``(recall, precision)``.
    """
    tp, fp = _counts(score, positive)
    return tp / tp[-1], tp / (tp + fp)


def roc_pr_plot(series: Sequence[Series], png: PathLike
                ) -> Optional[List[Dict[str, float]]]:
    r"""ROC and PR curves, one row of two panels per series whose observed
    labels hold both classes, their areas in the titles.

    Args:
        series (Sequence[Tuple[str, array-like, array-like]]): ``(label,
            target, score)``: labels ``0``/``1`` (``NaN`` where missing)
            and scores of the positive class.
        png (str or Path): the figure to write.

    Returns:
        List[Dict[str, float]]: the ``auroc`` and ``average_precision`` of
        every plotted series, or :obj:`None` if nothing was drawn.
    """
    kept = []
    for label, target, score in series:
        target, score = np.asarray(target, float), np.asarray(score, float)
        observed = np.isfinite(target)
        positive = target[observed] == 1.0
        if 0 < positive.sum() < len(positive):
            kept.append((label, score[observed], positive))
    made = _figure(2 * len(kept), columns=2) if kept else None
    if made is None:
        return None
    fig, axes = made
    areas = []
    for k, (label, score, positive) in enumerate(kept):
        metrics = binary_metrics(score, positive.astype(float))
        roc, pr = axes[2 * k], axes[2 * k + 1]
        roc.plot(*roc_curve(score, positive), lw=1)
        roc.plot([0, 1], [0, 1], 'k--', lw=0.8)
        roc.set(title=f'{label}\nAUROC {metrics["auroc"]:.4g}',
                xlabel='false positive rate', ylabel='true positive rate')
        recall, precision = pr_curve(score, positive)
        pr.step(np.r_[0.0, recall], np.r_[precision[0], precision],
                where='pre', lw=1)
        pr.axhline(positive.mean(), color='k', ls='--', lw=0.8)
        pr.set(title=f'{label}\nAP {metrics["average_precision"]:.4g}',
               xlabel='recall', ylabel='precision', ylim=(0, 1.02))
        areas.append({k: metrics[k] for k in ('auroc', 'average_precision')})
    _save(fig, Path(png))
    return areas


def _column(table: List[Dict[str, str]], key: str) -> np.ndarray:
    """A column of a predictions CSV as floats (``NaN`` where empty)."""
    return np.array([float(r[key]) if r[key] else math.nan for r in table])


def _run_predictions(run: Path) -> Tuple[Dict[str, Tuple[np.ndarray,
                                                          np.ndarray]],
                                          Dict[str, Tuple[np.ndarray,
                                                          np.ndarray]]]:
    """``({label: (true, pred)}, {label: (target, score)})`` of the test
    predictions of a fine-tuning run directory: regression columns, and
    binary / multi-label columns and one-vs-rest classes of multi-class
    tasks. Labels are the column names (``dataset/column`` if the run has
    several datasets)."""
    results = json.loads((run / 'results.json').read_text())
    regression, classification = {}, {}
    datasets = results['datasets']
    for name, entry in datasets.items():
        with open(run / f'test_predictions_{name}.csv', newline='') as f:
            table = list(csv.DictReader(f))
        prefix = f'{name}/' if len(datasets) > 1 else ''
        for task in map(task_from_dict, entry['tasks']):
            if task.level != 'molecule':
                continue
            if task.kind == 'multiclass':
                y = _column(table, task.columns[0])
                for k, cls in enumerate(task.classes):
                    classification[f'{prefix}{task.name}={cls}'] = (
                        np.where(np.isfinite(y), y == k, np.nan),
                        _column(table, f'{task.name}_prob_{cls}'))
                continue
            for c in task.columns:
                if task.kind == 'regression':
                    regression[prefix + c] = (_column(table, c),
                                              _column(table, f'{c}_pred'))
                else:
                    classification[prefix + c] = (
                        _column(table, c), _column(table, f'{c}_prob'))
    return regression, classification


def prediction_plots(runs: Dict[str, Sequence[PathLike]], stem: PathLike
                     ) -> List[Path]:
    r"""``<stem>_parity.png`` (regression) and ``<stem>_roc_pr.png``
    (classification) of the test predictions of fine-tuning runs, pooled
    per model and column over its runs (e.g. seeds). Run directories that
    are gone are passed over; never raises (a failure is a warning).

    Args:
        runs (Dict[str, Sequence[str or Path]]): the run directories of
            every model label.
        stem (str or Path): path prefix of the figures.

    Returns:
        List[Path]: the figures written.
    """
    try:
        pooled: Tuple[Dict[str, List], Dict[str, List]] = ({}, {})
        for model, dirs in runs.items():
            for run in map(Path, dirs):
                if not (run / 'results.json').exists():
                    continue
                for into, found in zip(pooled, _run_predictions(run)):
                    for label, (a, b) in found.items():
                        pair = into.setdefault(f'{model}\n{label}', [[], []])
                        pair[0].append(a)
                        pair[1].append(b)
        written = []
        for into, plot, suffix in zip(pooled, (parity_plot, roc_pr_plot),
                                      ('parity', 'roc_pr')):
            series = [(label, np.concatenate(a), np.concatenate(b))
                      for label, (a, b) in into.items()]
            png = Path(f'{stem}_{suffix}.png')
            if series and plot(series, png) is not None:
                written.append(png)
        return written
    except Exception as e:  # a plot must never fail a benchmark
        warnings.warn(f'{stem}: prediction plots not written '
                      f'({type(e).__name__}: {e})', stacklevel=2)
        return []
