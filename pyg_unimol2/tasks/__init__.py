"""Tasks as data: what is learned (:class:`Task`), its labels, losses,
metrics and normalisation."""
from .losses import multitask_loss, task_loss
from .metrics import selection_score, task_metrics
from .task import (KINDS, LEVELS, LOSSES, METRICS, Task, TaskError,
                   encode_label, infer_classes, label_slices, parse_targets,
                   task_from_dict)

__all__ = ['Task', 'TaskError', 'KINDS', 'LEVELS', 'LOSSES', 'METRICS',
           'parse_targets', 'task_from_dict', 'label_slices', 'encode_label',
           'infer_classes', 'task_loss', 'multitask_loss', 'task_metrics',
           'selection_score']
