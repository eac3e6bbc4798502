r"""Task losses on observed labels only.

Every loss of a task is the mean over the labels that are present (finite)
in the batch; a task without any label in the batch contributes exactly
zero (and no gradient). The loss of a dataset's batch is the weighted mean
over its tasks with a **fixed** denominator,

.. math::
    \mathcal{L} = \frac{\sum_t w_t\,\mathcal{L}_t}{\sum_t w_t},
    \qquad \mathcal{L}_t = \frac{1}{|O_t|}\sum_{i \in O_t}
    \ell_t(\hat{y}_{it}, y_{it}),

where :math:`O_t` is the set of observed labels of task :math:`t` in the
batch (:math:`\mathcal{L}_t = 0` when it is empty), so a missing task does
not re-weight the others.
"""
from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from .task import Task

__all__ = ['task_loss', 'multitask_loss']


def task_loss(task: Task, output: Tensor, target: Tensor) -> Tuple[Tensor,
                                                                   int]:
    r"""The loss of one task over its observed labels.

    Args:
        task (Task): the task.
        output (Tensor): head output ``[N, num_outputs]``: standardised
            values (regression) or logits.
        target (Tensor): labels ``[N, width]`` (standardised for
            regression; class indices for multi-class), ``NaN`` = missing.

    Returns:
        (Tensor, int): the mean loss over observed labels (``0`` with no
        gradient flow when there are none) and their count.
    """
    if task.kind == 'multiclass':
        observed = torch.isfinite(target[:, 0])
        count = int(observed.sum())
        if count == 0:
            return output.sum() * 0.0, 0
        return F.cross_entropy(output[observed].float(),
                               target[observed, 0].long()), count
    observed = torch.isfinite(target)
    count = int(observed.sum())
    if count == 0:
        return output.sum() * 0.0, 0
    pred, true = output[observed].float(), target[observed].float()
    if task.loss == 'bce':
        return F.binary_cross_entropy_with_logits(pred, true), count
    if task.loss == 'smooth_l1':
        return F.smooth_l1_loss(pred, true, beta=1.0), count
    if task.loss == 'l1':
        return F.l1_loss(pred, true), count
    return F.mse_loss(pred, true), count


def multitask_loss(tasks: Sequence[Task], outputs: Dict[str, Tensor],
                   targets: Dict[str, Tensor]
                   ) -> Tuple[Tensor, Dict[str, Tuple[float, int]]]:
    r"""The weighted loss of a batch over :obj:`tasks` (module docstring).

    Returns:
        (Tensor, dict): the loss and ``{task: (loss value, observed
        labels)}``.
    """
    total = sum(t.weight for t in tasks)
    if total <= 0:
        raise ValueError('the task weights sum to zero')
    loss, parts = 0.0, {}
    for task in tasks:
        value, count = task_loss(task, outputs[task.name], targets[task.name])
        loss = loss + task.weight * value
        parts[task.name] = (float(value.detach()), count)
    return loss / total, parts
