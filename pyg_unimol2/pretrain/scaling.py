r"""``unimol2 scaling-fit``: the scaling law of
:mod:`~pyg_unimol2.pretrain.scaling_law` (paper eq. 10) fitted to the
validation-loss trajectories (``metrics.jsonl``) of several ``unimol2
pretrain`` runs, :math:`M` from each run's ``config.json`` preset, and
tested on held-out runs: Table 3's metrics, a JSON of the fit and a Fig.
4-style PNG (:class:`ScalingReport`, :func:`scaling_fit`).
"""
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, InputError, MissingFileError
from .scaling_law import (COEFFICIENTS, NUM_COEFFICIENTS, PAPER_LAW,
                          PARAMETER_UNIT, ScalingFit, fit_scaling_law,
                          scaling_metrics)

__all__ = ['RunCurve', 'ScalingReport', 'read_run', 'scaling_fit']

PathLike = Union[str, os.PathLike]


@functools.lru_cache(maxsize=None)
def _preset_parameters(preset: str) -> int:
    """Parameters of ``UniMol2.from_preset(preset)``, built on the meta
    device (no memory, no initialisation)."""
    import torch

    from ..models.unimol2 import UniMol2
    with torch.device('meta'):
        return UniMol2.from_preset(preset).num_parameters()


@dataclass(frozen=True, eq=False)
class RunCurve:
    r"""The validation-loss trajectory of a pretraining run
    (:func:`read_run`).

    Args:
        path (str): the run directory.
        preset (str): its model preset.
        num_parameters (int): parameters of the model.
        steps (np.ndarray): steps of its validations, increasing ``[k]``.
        loss (np.ndarray): the validation loss at each ``[k]``.
    """
    path: str
    preset: str
    num_parameters: int
    steps: np.ndarray
    loss: np.ndarray

    @property
    def m(self) -> float:
        """Model size in the law's units (millions of parameters)."""
        return self.num_parameters / PARAMETER_UNIT


def _records(metrics: Path) -> List[Dict[str, Any]]:
    """The complete lines of a ``metrics.jsonl`` (a line cut by a kill is
    left out)."""
    lines = metrics.read_text().split('\n')[:-1]
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f'{metrics}, line {number}: not JSON '
                             f'({e.msg})') from None
        if not isinstance(record, dict) or 'step' not in record:
            raise InputError(f'{metrics}, line {number}: not a metrics '
                             f'record (no "step")')
        records.append(record)
    return records


def _preset(run: Path) -> str:
    """The model preset of the run's ``config.json``."""
    config = run / 'config.json'
    if not config.is_file():
        raise MissingFileError(f'{run}: no config.json, which names the '
                               f'model preset (not a unimol2 pretrain run '
                               f'directory?)')
    try:
        preset = json.loads(config.read_text()).get('preset')
    except (json.JSONDecodeError, AttributeError):
        raise InputError(f'{config}: not a JSON object') from None
    from ..models.unimol2 import PRESETS
    if preset not in PRESETS:
        raise ConfigError(f'{config}: preset {preset!r} is not one of '
                          f'{", ".join(PRESETS)}')
    return preset


def read_run(path: PathLike, metric: str = 'loss') -> RunCurve:
    r"""Reads the validation trajectory of a ``unimol2 pretrain`` run: the
    ``valid_<metric>`` entries of ``metrics.jsonl`` (the last record of a
    step wins) and the preset of ``config.json``.

    Args:
        path (str or Path): the run directory.
        metric (str, optional): ``'loss'`` (the total) or an objective
            term, ``'atom'``, ``'coord'``, ``'dist'``. (default:
            :obj:`'loss'`)
    """
    run = Path(path)
    metrics = run / 'metrics.jsonl'
    if not metrics.is_file():
        raise MissingFileError(f'{run}: no metrics.jsonl (not a unimol2 '
                               f'pretrain run directory?)')
    key = f'valid_{metric}'
    points, others = {}, set()
    for record in _records(metrics):
        if key in record:
            points[int(record['step'])] = float(record[key])
        others.update(k for k in record if k.startswith('valid_'))
    if not points:
        has = (f'its validation records have {", ".join(sorted(others))}'
               if others else 'the run has no validation records (an empty '
               'validation split, or stopped before its first validation)')
        raise InputError(f'{metrics}: no validation point ({key}); {has}')
    steps = np.array(sorted(points), dtype=float)
    loss = np.array([points[s] for s in sorted(points)])
    preset = _preset(run)
    return RunCurve(str(path), preset, _preset_parameters(preset), steps,
                    loss)


def _window(run: RunCurve, skip_steps: int, last_steps: int = 0
            ) -> np.ndarray:
    """Mask of the points of :obj:`run` after step :obj:`skip_steps` and,
    if :obj:`last_steps`, in its last :obj:`last_steps` steps."""
    mask = run.steps > skip_steps
    if last_steps:
        mask &= run.steps > run.steps[-1] - last_steps
    return mask


@dataclass(frozen=True, eq=False)
class ScalingReport:
    r"""Eq. 10 fitted on some runs and tested on held-out ones
    (:func:`scaling_fit`).

    Args:
        fit (ScalingFit): the fit.
        fit_runs (List[RunCurve]): the runs fitted.
        predict_runs (List[RunCurve]): the held-out runs.
        skip_steps (int): validations up to this step were left out.
        eval_last_steps (int): the metrics cover each run's last so many
            steps (``0``: every point after :obj:`skip_steps`).
        metric (str): the validation entry fitted (``valid_<metric>``).
    """
    fit: ScalingFit
    fit_runs: List[RunCurve]
    predict_runs: List[RunCurve]
    skip_steps: int
    eval_last_steps: int
    metric: str

    def metrics(self, run: RunCurve) -> Dict[str, float]:
        """:func:`scaling_metrics` of the points of :obj:`run` after the
        transient, in its last :obj:`eval_last_steps` steps."""
        mask = _window(run, self.skip_steps, self.eval_last_steps)
        return scaling_metrics(self.fit.law(run.m, run.steps[mask]),
                               run.loss[mask])

    def _roles(self) -> List[Tuple[RunCurve, str]]:
        return [(r, 'predict') for r in self.predict_runs] + \
            [(r, 'fit') for r in self.fit_runs]

    def to_dict(self) -> Dict[str, Any]:
        """The JSON record: the law, coefficients, standard errors,
        covariance, settings, and per run its points after the transient,
        their predictions and its metrics."""
        runs = []
        for run, role in self._roles():
            used = _window(run, self.skip_steps)
            runs.append(dict(
                path=run.path, role=role, preset=run.preset,
                num_parameters=run.num_parameters, m=run.m,
                steps=run.steps[used].tolist(), loss=run.loss[used].tolist(),
                predicted=self.fit.law(run.m, run.steps[used]).tolist(),
                metrics=self.metrics(run)))
        return dict(
            equation='L = alpha_m*M^beta_m + alpha_s*S^beta_s + '
                     'alpha_c*C^beta_c, C = M*S (paper eq. 10)',
            units=dict(M='millions of parameters of the preset (every '
                         'parameter, masked-atom head included)',
                       S='optimizer steps', C='M*S'),
            coefficients=self.fit.law.to_dict(),
            stderr=self.fit.stderr.to_dict(),
            covariance=self.fit.covariance.tolist(),
            order=list(COEFFICIENTS), points=self.fit.points,
            rss=self.fit.rss, paper=PAPER_LAW.to_dict(),
            settings=dict(skip_steps=self.skip_steps,
                          eval_last_steps=self.eval_last_steps,
                          metric=f'valid_{self.metric}'),
            runs=runs)

    def table(self) -> str:
        """The fitted law, its coefficients with standard errors beside the
        paper's, and a Table 3-style markdown table of the held-out runs
        (the fitted ones if there are none) above the paper's rows."""
        from ..bench.paper import TABLES
        law, err = self.fit.law, self.fit.stderr
        lines = [f'eq. 10 fitted on {len(self.fit_runs)} runs, '
                 f'{self.fit.points} validation points (steps > '
                 f'{self.skip_steps}):',
                 f'  {law}   (M: millions of parameters, S: steps, C = M*S)',
                 '', '| coefficient | value | std error | paper (eq. 11) |',
                 '|---|---|---|---|']
        for name in COEFFICIENTS:
            lines.append(f'| {name} | {getattr(law, name):.4g} | '
                         f'{getattr(err, name):.2g} | '
                         f'{getattr(PAPER_LAW, name):g} |')
        held = bool(self.predict_runs)
        window = (f'last {self.eval_last_steps} steps' if
                  self.eval_last_steps else f'steps > {self.skip_steps}')
        lines += ['', f'{"held-out" if held else "fitted (in-sample)"} runs '
                  f'({window}):', '',
                  '| model | parameters | points | RMAE | MSE | R-Squared | '
                  'Pearson |', '|---|---|---|---|---|---|---|']
        for run in self.predict_runs if held else self.fit_runs:
            v = self.metrics(run)
            lines.append(f'| {run.path} ({run.preset}) | {run.m:.2f}M | '
                         f'{v["points"]} | {v["rmae"]:.4g} | '
                         f'{v["mse"]:.4g} | {v["r_squared"]:.4g} | '
                         f'{v["pearson"]:.4g} |')
        for row, cells in TABLES['table3'].rows.items():
            lines.append(f'| paper: {row} | | | ' + ' | '.join(cells) + ' |')
        return '\n'.join(lines)

    def plot(self, png: PathLike) -> Optional[Path]:
        """Fig. 4: per run (held-out ones first), its validation loss
        against steps (open markers: the transient) and the law's curve;
        :obj:`None` without matplotlib (one warning)."""
        from ..plots import _figure, _save
        made = _figure(len(self.fit_runs) + len(self.predict_runs))
        if made is None:
            return None
        fig, axes = made
        for ax, (run, role) in zip(axes, self._roles()):
            used = _window(run, self.skip_steps)
            curve = np.linspace(run.steps[0], run.steps[-1], 200)
            ax.plot(run.steps[used], run.loss[used], 'o', ms=3,
                    label='actual')
            ax.plot(run.steps[~used], run.loss[~used], 'o', ms=3,
                    mfc='none', color='grey', label='transient')
            ax.plot(curve, self.fit.law(run.m, curve), lw=1,
                    label='predicted')
            ax.set(title=f'{Path(run.path).name} ({run.m:.4g}M, '
                   f'{"held out" if role == "predict" else "fitted"})\n'
                   f'RMAE {self.metrics(run)["rmae"]:.3g}', xlabel='step',
                   ylabel=f'valid {self.metric}')
            ax.legend(fontsize=6)
        return _save(fig, Path(png))

    def write(self, out: PathLike) -> Tuple[Path, Optional[Path]]:
        """Writes ``scaling_fit.json`` (:meth:`to_dict`; ``null`` for an
        infinite standard error) and ``scaling_fit.png`` (:meth:`plot`)
        into the directory :obj:`out`; returns both paths (the PNG's
        :obj:`None` without matplotlib)."""
        from ..train.report import json_safe
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        record = out / 'scaling_fit.json'
        record.write_text(json.dumps(json_safe(self.to_dict()), indent=2))
        return record, self.plot(out / 'scaling_fit.png')


def _check_points(runs: List[RunCurve], skip_steps: int, last_steps: int,
                  what: str) -> None:
    """Errors for a run without a point in the window or whose loss there
    is not a positive number."""
    for run in runs:
        chosen = _window(run, skip_steps, last_steps)
        if not chosen.any():
            raise InputError(f'{run.path}: no validation point {what} (its '
                             f'last is at step {run.steps[-1]:.0f})')
        bad = chosen & ~(run.loss > 0)
        if bad.any():
            raise InputError(f'{run.path}: the validation loss '
                             f'{run.loss[bad][0]} at step '
                             f'{run.steps[bad][0]:.0f} is not a positive '
                             f'number')


def scaling_fit(fit: Sequence[PathLike], predict: Sequence[PathLike] = (),
                skip_steps: int = 0, eval_last_steps: int = 0,
                metric: str = 'loss') -> ScalingReport:
    r"""Fits eq. 10 on the validation points after :obj:`skip_steps` of
    the runs :obj:`fit` and predicts the runs :obj:`predict`.

    Args:
        fit (Sequence[str or Path]): run directories to fit (``unimol2
            pretrain --out``), of at least two model sizes.
        predict (Sequence[str or Path], optional): held-out run
            directories.
        skip_steps (int, optional): the transient: validations up to this
            step are left out of the fit and the metrics (paper: 200,000).
            (default: :obj:`0`)
        eval_last_steps (int, optional): compute each run's metrics over
            its last so many steps (paper: 100,000); ``0``: every point
            after the transient. (default: :obj:`0`)
        metric (str, optional): the validation entry, ``valid_<metric>``.
            (default: :obj:`'loss'`)

    Returns:
        ScalingReport: the fit and the runs (:meth:`ScalingReport.table`,
        :meth:`ScalingReport.write`).
    """
    if skip_steps < 0 or eval_last_steps < 0:
        raise ConfigError('skip_steps and eval_last_steps must not be '
                          'negative')
    if not fit:
        raise ConfigError('no run to fit')
    fit_runs = [read_run(p, metric) for p in fit]
    predict_runs = [read_run(p, metric) for p in predict]
    after = f'after step {skip_steps} (the transient, --skip-steps)'
    _check_points(fit_runs, skip_steps, 0, after)
    _check_points(predict_runs, skip_steps, eval_last_steps, after + (
        f' in its last {eval_last_steps} steps' if eval_last_steps else ''))
    if len({r.num_parameters for r in fit_runs}) < 2:
        raise ConfigError(f'the fitted runs ({", ".join(map(str, fit))}) '
                          f'are all of one model size; eq. 10 needs at '
                          f'least two')
    used = [_window(r, skip_steps) for r in fit_runs]
    counts = [int(u.sum()) for u in used]
    if sum(counts) <= NUM_COEFFICIENTS:
        listed = ', '.join(f'{r.path}: {c}' for r, c in zip(fit_runs, counts))
        raise InputError(f'too few validation points {after} to fit the '
                         f'{NUM_COEFFICIENTS} coefficients of eq. 10 '
                         f'({listed}; {sum(counts)} in all, at least '
                         f'{NUM_COEFFICIENTS + 1} needed)')
    m = np.concatenate([np.full(c, r.m) for r, c in zip(fit_runs, counts)])
    steps = np.concatenate([r.steps[u] for r, u in zip(fit_runs, used)])
    loss = np.concatenate([r.loss[u] for r, u in zip(fit_runs, used)])
    return ScalingReport(fit_scaling_law(m, steps, loss), fit_runs,
                         predict_runs, skip_steps, eval_last_steps, metric)
