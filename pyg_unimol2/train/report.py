"""Printed tables of fine-tuning results and the K-fold summary."""
from typing import Any, Dict, List

import numpy as np

__all__ = ['print_results', 'summarize_folds', 'json_safe']


def json_safe(obj: Any) -> Any:
    """NaN / inf as ``None`` (``null``), so that results are valid JSON."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return 'n/a'
    if isinstance(value, str):
        return value
    return f'{value:.4f}' if abs(value) >= 1e-2 else f'{value:.3g}'


def print_results(results: Dict[str, Any]) -> None:
    """One line per dataset and task: its declared test metrics (mean (std)
    over folds for a K-fold summary) and, for regression, the MAE of
    predicting the training mean."""
    title = (f"\nTest metrics, mean (std) over {results['folds']} folds:"
             if 'folds' in results else
             f"\nTest metrics (best validation epoch "
             f"{results['best_epoch']}):")
    print(title)
    for name, entry in results['datasets'].items():
        for task in entry['tasks']:
            metrics = entry['test'][task['name']]
            shown = ', '.join(f'{m}={_fmt(metrics.get(m))}'
                              for m in task['metrics'])
            base = entry['train_mean_baseline_mae'].get(task['name'])
            extra = '' if base is None else f' (train-mean MAE {_fmt(base)})'
            unit = f" [{task['unit']}]" if task.get('unit') else ''
            print(f"  {name}/{task['name']}{unit}: {shown}{extra}")


def summarize_folds(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and standard deviation over folds of every test metric
    (formatted ``mean (std)``), with the per-fold results."""
    first = runs[0]
    datasets = {}
    for name, entry in first['datasets'].items():
        test, base = {}, {}
        for task in entry['tasks']:
            t = task['name']
            test[t] = {}
            for metric in entry['test'][t]:
                values = np.array([r['datasets'][name]['test'][t][metric]
                                   for r in runs], dtype=float)
                ok = values[np.isfinite(values)]
                test[t][metric] = (f'{ok.mean():.4g} ({ok.std():.2g})'
                                   if len(ok) else None)
            values = [r['datasets'][name]['train_mean_baseline_mae'].get(t)
                      for r in runs]
            if values[0] is not None:
                base[t] = float(np.mean(values))
        datasets[name] = dict(tasks=entry['tasks'], test=test,
                              train_mean_baseline_mae=base)
    return dict(folds=len(runs), datasets=datasets, runs=runs)
