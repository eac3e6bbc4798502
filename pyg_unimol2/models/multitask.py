r"""One backbone, one head per task, heads grouped per dataset (Graphium).

A :class:`TaskModel` maps a batch of one dataset to ``{task name: output}``:
standardised values for regression tasks, logits for classification tasks,
``[B, outputs]`` for molecule-level and ``[num_atoms, outputs]`` (atoms in
batch order) for atom-level tasks. Each head keeps the z-score statistics
of its task (:class:`TaskHead`), so :meth:`TaskModel.predict` answers in
the labels' units (regression) or as probabilities (classification).

:class:`UniMol2MultiTask` puts the official fine-tuning head
(:class:`~pyg_unimol2.nn.heads.ClassificationHead`, dense + tanh + linear)
on the CLS representation (molecule level) or on each atom representation
(atom level). The baselines of :mod:`pyg_unimol2.bench.baselines` are
wrapped in :class:`pyg_unimol2.bench.baselines.BaselineMultiTask`, so that
the same loss, loop, metrics and checkpoints serve both.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from ..nn.heads import ClassificationHead
from ..tasks import Task, label_slices
from .unimol2 import UniMol2

__all__ = ['TaskHead', 'TaskModel', 'UniMol2MultiTask', 'task_targets',
           'module_key', 'build_multitask']

TaskGroups = Mapping[str, Sequence[Task]]


def module_key(name: str) -> str:
    """A task or dataset name usable as a module name (no ``.``)."""
    return name.replace('.', '\u2024') or '_'


class TaskHead(nn.Module):
    r"""The head of one task and the z-score statistics of its labels:

    .. math::
        \hat{y} = \mu + \sigma\,f(\mathbf{x})

    (:math:`\mu = 0, \sigma = 1` for classification tasks, whose
    :math:`f(\mathbf{x})` are logits).

    Args:
        in_channels (int): representation size :math:`E`.
        task (Task): the task (its :attr:`~Task.num_outputs` sets the
            output size).
        dropout (float, optional): pooler dropout. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(N, E)`
        - **output:** :math:`(N, \text{num\_outputs})`
    """
    def __init__(self, in_channels: int, task: Task,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.task = task
        self.head = ClassificationHead(in_channels, in_channels,
                                       task.num_outputs, dropout)
        self.register_buffer('mean', torch.zeros(task.width))
        self.register_buffer('std', torch.ones(task.width))

    def reset_parameters(self) -> None:
        self.head.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Stores the training-label statistics (``[width]`` each)."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-12))

    def standardize(self, y: Tensor) -> Tensor:
        return (y - self.mean) / self.std

    def to_units(self, output: Tensor) -> Tensor:
        """Regression output in label units; classification output as
        probabilities (softmax over classes for multi-class)."""
        kind = self.task.kind
        if kind == 'regression':
            return output * self.std + self.mean
        if kind == 'multiclass':
            return torch.softmax(output.float(), dim=-1)
        return torch.sigmoid(output.float())

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.task.name}, '
                f'{self.task.kind}, level={self.task.level})')


def task_targets(tasks: Sequence[Task], batch: Batch) -> Dict[str, Tensor]:
    """Each task's labels of :obj:`batch` (``y`` / ``atom_y`` columns, see
    :func:`~pyg_unimol2.tasks.label_slices`)."""
    return {name: batch[attr][:, cols]
            for name, (attr, cols) in label_slices(tasks).items()}


class TaskModel(nn.Module):
    r"""Base of the multi-task models: :attr:`heads` is a
    ``ModuleDict`` of datasets, each a ``ModuleDict`` of
    :class:`TaskHead` per task. Subclasses implement :meth:`forward`.

    Args:
        groups (Mapping[str, Sequence[Task]]): the tasks of each dataset.
        in_channels (int): representation size of the heads.
        pooler_dropout (float): head dropout.
    """
    def __init__(self, groups: TaskGroups, in_channels: int,
                 pooler_dropout: float = 0.0) -> None:
        super().__init__()
        if not groups or not all(groups.values()):
            raise ValueError('every dataset needs at least one task')
        self.groups: Dict[str, List[Task]] = {d: list(t)
                                              for d, t in groups.items()}
        self.pooler_dropout = pooler_dropout
        self.heads = nn.ModuleDict({
            module_key(d): nn.ModuleDict({
                module_key(t.name): TaskHead(in_channels, t, pooler_dropout)
                for t in tasks})
            for d, tasks in self.groups.items()})

    def head(self, dataset: str, task: str) -> TaskHead:
        return self.heads[module_key(dataset)][module_key(task)]

    def dataset_heads(self, dataset: str) -> List[Tuple[Task, TaskHead]]:
        if dataset not in self.groups:
            raise KeyError(f'no dataset {dataset!r} in the model (has '
                           f'{sorted(self.groups)})')
        return [(t, self.head(dataset, t.name)) for t in self.groups[dataset]]

    def standardized_targets(self, dataset: str,
                             batch: Batch) -> Dict[str, Tensor]:
        """Labels of :obj:`batch` per task, z-scored like the outputs."""
        targets = task_targets(self.groups[dataset], batch)
        return {t.name: head.standardize(targets[t.name])
                for t, head in self.dataset_heads(dataset)}

    @torch.no_grad()
    def predict(self, batch: Batch, dataset: Optional[str] = None
                ) -> Dict[str, Tensor]:
        """Outputs in label units / probabilities, per task."""
        dataset = dataset or self.default_dataset
        outputs = self(batch, dataset)
        return {t.name: head.to_units(outputs[t.name])
                for t, head in self.dataset_heads(dataset)}

    @property
    def default_dataset(self) -> str:
        """The only dataset, or the first."""
        return next(iter(self.groups))

    @property
    def tasks(self) -> List[Task]:
        return [t for tasks in self.groups.values() for t in tasks]

    def forward(self, batch: Batch, dataset: str) -> Dict[str, Tensor]:
        raise NotImplementedError


class UniMol2MultiTask(TaskModel):
    r"""Uni-Mol2 with task heads on the CLS (molecule-level tasks) and atom
    (atom-level tasks) representations.

    Args:
        backbone (UniMol2): the encoder.
        groups (Mapping[str, Sequence[Task]]): the tasks of each dataset,
            e.g. ``{'b3db': [bbb, logbb], 'qm9': [gap]}``.
        pooler_dropout (float, optional): head dropout. (default:
            :obj:`0.0`)
    """
    def __init__(self, backbone: UniMol2, groups: TaskGroups,
                 pooler_dropout: float = 0.0) -> None:
        super().__init__(groups, backbone.config.embed_dim, pooler_dropout)
        self.backbone = backbone

    def forward(self, batch: Batch, dataset: str) -> Dict[str, Tensor]:
        out = self.backbone(batch, compute_pos=False)
        heads = self.dataset_heads(dataset)
        atoms = out.atoms[out.atom_mask] if any(
            t.level == 'atom' for t, _ in heads) else None
        return {t.name: head(out.cls if t.level == 'molecule' else atoms)
                for t, head in heads}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.backbone.config.name}, '
                + ', '.join(f'{d}={[t.name for t in ts]}'
                            for d, ts in self.groups.items()) + ')')


def build_multitask(preset_or_backbone: Union[str, UniMol2],
                    groups: TaskGroups, pooler_dropout: float = 0.0,
                    **overrides) -> UniMol2MultiTask:
    """A :class:`UniMol2MultiTask` with a fresh backbone of a preset (or
    the given backbone)."""
    backbone = preset_or_backbone
    if isinstance(backbone, str):
        backbone = UniMol2.from_preset(backbone, lm_head=False, **overrides)
    return UniMol2MultiTask(backbone, groups, pooler_dropout)
