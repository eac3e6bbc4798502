"""Tasks as data: what is learned (:class:`Task`), its labels, losses,
metrics and normalisation."""
from .energy_force import ENERGY_LOSSES, FORCE_LOSSES, energy_force_loss
from .energy_stats import (NUM_ELEMENTS, EnergyForceStats, element_counts,
                           fit_energy_force_stats, fit_reference_energies)
from .losses import multitask_loss, task_loss
from .metrics import selection_score, task_metrics
from .task import (KINDS, LEVELS, LOSSES, METRICS, Task, TaskError,
                   encode_label, infer_classes, label_slices, parse_targets,
                   task_from_dict)

__all__ = ['Task', 'TaskError', 'KINDS', 'LEVELS', 'LOSSES', 'METRICS',
           'parse_targets', 'task_from_dict', 'label_slices', 'encode_label',
           'infer_classes', 'task_loss', 'multitask_loss', 'task_metrics',
           'selection_score', 'energy_force_loss', 'ENERGY_LOSSES',
           'FORCE_LOSSES', 'NUM_ELEMENTS', 'EnergyForceStats',
           'element_counts', 'fit_reference_energies',
           'fit_energy_force_stats']
