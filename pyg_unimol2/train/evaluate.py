r"""Predictions and metrics of a task model on one dataset's molecules.

Molecule-level predictions of rows that share ``mol`` (conformers of one
molecule) are averaged first (the official test-time averaging); atom-level
predictions are scored per atom row.
"""
from typing import Dict, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..models.multitask import TaskModel, task_targets
from ..tasks.metrics import selection_score, task_metrics
from .batches import collate
from .conformers import average_by_molecule

__all__ = ['predict_view', 'evaluate_view', 'mean_score']

Predictions = Dict[str, Tensor]


@torch.no_grad()
def predict_view(model: TaskModel, view: Dataset, dataset: str,
                 batch_size: int = 64,
                 device: torch.device = torch.device('cpu')
                 ) -> Tuple[Predictions, Predictions]:
    """Predictions (label units / probabilities) and labels of every task
    of :obj:`dataset` on :obj:`view`: ``[molecules, ...]`` for
    molecule-level tasks (in view order, conformers averaged), ``[atoms,
    ...]`` for atom-level tasks."""
    model.eval()
    tasks = model.groups[dataset]
    preds: Dict[str, list] = {t.name: [] for t in tasks}
    labels: Dict[str, list] = {t.name: [] for t in tasks}
    mols, offset = [], 0
    for batch in DataLoader(view, batch_size=batch_size, collate_fn=collate):
        batch = batch.to(device)
        out = model.predict(batch, dataset)
        for name, value in task_targets(tasks, batch).items():
            preds[name].append(out[name].float().cpu())
            labels[name].append(value.cpu())
        mols.append(batch.mol.cpu() if 'mol' in batch else
                    offset + torch.arange(batch.num_graphs))
        offset += batch.num_graphs
    mol = torch.cat(mols) if mols else torch.zeros(0, dtype=torch.long)
    out_p, out_y = {}, {}
    for task in tasks:
        p = torch.cat(preds[task.name]) if preds[task.name] else \
            torch.zeros(0, task.num_outputs)
        y = torch.cat(labels[task.name]) if labels[task.name] else \
            torch.zeros(0, task.width)
        if task.level == 'molecule' and len(mol):
            p, y = average_by_molecule(p, mol), average_by_molecule(y, mol)
        out_p[task.name], out_y[task.name] = p, y
    return out_p, out_y


def evaluate_view(model: TaskModel, view: Dataset, dataset: str,
                  batch_size: int = 64,
                  device: torch.device = torch.device('cpu')
                  ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, float],
                             Tuple[Predictions, Predictions]]:
    """Per-task metrics (:func:`~pyg_unimol2.tasks.metrics.task_metrics`),
    per-task selection scores (lower is better; regression MAE in units of
    the training-label standard deviation) and the predictions."""
    preds, labels = predict_view(model, view, dataset, batch_size, device)
    metrics, scores = {}, {}
    for task, head in model.dataset_heads(dataset):
        metrics[task.name] = task_metrics(task, preds[task.name].numpy(),
                                          labels[task.name].numpy())
        std = float(head.std.mean()) if task.kind == 'regression' else 1.0
        scores[task.name] = selection_score(task, metrics[task.name], std)
    return metrics, scores, (preds, labels)


def mean_score(scores: Dict[str, Dict[str, float]]) -> float:
    """Mean of the finite per-task scores of all datasets (NaN if none)."""
    values = [v for per in scores.values() for v in per.values()
              if np.isfinite(v)]
    return float(np.mean(values)) if values else float('nan')
