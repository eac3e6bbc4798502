r"""Fine-tuning on any labelled molecules: one or several datasets, each
with its own tasks (regression, binary / multi-class / multi-label
classification; molecule or atom level), sparse labels, one backbone.

The recipe follows the paper and the official fine-tuning task: AdamW,
linear warmup then linear decay, gradient clipping at 1.0, z-scored
regression labels, best-validation checkpoint selection, test-time
averaging over conformers. Losses and metrics use observed labels only
(:mod:`pyg_unimol2.tasks.losses`); batches of several datasets are mixed
by a dataset sampler (proportional, uniform or temperature, JMP's
:math:`T = 2`). Training runs in :func:`pyg_unimol2.train.loop.fit`
(resumable).

Outputs in ``config.out``: ``best.pt`` (a ``'tasks'`` checkpoint),
``results.json`` (per-dataset, per-task validation and test metrics),
``test_predictions_<dataset>.csv``, ``metrics.jsonl``, TensorBoard logs,
and ``checkpoints/`` (resume states).
"""
import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..checkpoints import (CheckpointError, keep_matching_heads,
                           load_backbone,
                           load_task_model, read_checkpoint, save_task_model,
                           task_model_state)
from ..data.prefetch import resolve_workers
from ..data.splits import Split
from ..errors import ConfigError, InputError
from ..models.multitask import TaskModel, UniMol2MultiTask
from ..models.unimol2 import UniMol2
from ..tasks import Task, TaskError, label_slices
from ..tasks.losses import multitask_loss
from .batches import TaskBatches
from .conformers import RandomConformer, all_conformers, build_conformers
from .evaluate import evaluate_view, mean_score
from .loop import LoopConfig, autocast, fit
from .report import json_safe

__all__ = ['FinetuneConfig', 'TaskData', 'finetune', 'fit_label_stats']


@dataclass
class FinetuneConfig:
    """Hyper-parameters of a fine-tuning run (defaults: paper/official).

    Beyond the optimisation settings of
    :class:`~pyg_unimol2.train.loop.LoopConfig`: the model (``model``:
    ``'unimol2'`` or a baseline of
    :data:`~pyg_unimol2.bench.baselines.BASELINES`; ``preset``,
    ``pretrained`` checkpoint of any format whose architecture then wins
    over ``preset``, ``keep_heads`` of that checkpoint whose task matches by
    name, ``pooler_dropout``, ``model_overrides``), the data views
    (``conformers`` per molecule, ``drop_feat``), batching (``batch_size``
    molecules at most, optional ``max_tokens`` / ``max_pairs`` budgets as
    in pretraining; ``num_workers`` processes collate them ahead of the
    step, default :func:`~pyg_unimol2.data.prefetch.default_workers`),
    dataset mixing (``mix``, ``temperature``) and the datasets whose
    validation score selects the best epoch (``select_on``, default all).
    """
    preset: str = 'small'
    model: str = 'unimol2'
    epochs: int = 40
    max_steps: Optional[int] = None
    batch_size: int = 32
    max_tokens: Optional[int] = None
    max_pairs: Optional[int] = None
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.06
    clip_norm: float = 1.0
    precision: str = 'fp32'
    accumulation: int = 1
    pooler_dropout: float = 0.0
    seed: int = 0
    num_workers: Optional[int] = None
    device: str = 'cpu'
    out: str = 'runs/finetune'
    max_minutes: Optional[float] = None
    ckpt_every: Optional[int] = None
    model_overrides: Dict[str, float] = field(default_factory=dict)
    conformers: int = 1
    drop_feat: bool = False
    ema_decay: Optional[float] = None
    pretrained: Optional[str] = None
    keep_heads: bool = True
    mix: str = 'temperature'
    temperature: float = 2.0
    conformer_workers: Optional[int] = None
    progress: bool = True
    select_on: Optional[List[str]] = None

    def loop(self) -> LoopConfig:
        return LoopConfig(
            epochs=self.epochs, max_steps=self.max_steps, lr=self.lr,
            weight_decay=self.weight_decay, warmup_ratio=self.warmup_ratio,
            clip_norm=self.clip_norm, precision=self.precision,
            accumulation=self.accumulation, ema_decay=self.ema_decay,
            max_minutes=self.max_minutes, ckpt_every=self.ckpt_every,
            seed=self.seed, out=self.out, progress=self.progress)


@dataclass
class TaskData:
    """One dataset of a run: its molecules, split, tasks and loss weight.

    Items of :obj:`dataset` hold the labels of :obj:`tasks` in ``y`` /
    ``atom_y`` (:func:`~pyg_unimol2.tasks.label_slices`), ``NaN`` where
    missing.
    """
    name: str
    dataset: Dataset
    split: Split
    tasks: List[Task]
    weight: float = 1.0

    def part(self, name: str) -> Dataset:
        return self.dataset[torch.as_tensor(self.split[name])]


def _views(data: TaskData, config: FinetuneConfig) -> Dict[str, Dataset]:
    """Train/valid/test views: the dataset itself, or with ``conformers >
    1`` / ``drop_feat`` a random conformer per molecule for training and all
    conformers (averaged at scoring) for validation and test."""
    if config.conformers <= 1 and not config.drop_feat:
        return {name: data.part(name) for name in ('train', 'valid', 'test')}
    views = {}
    for name in ('train', 'valid', 'test'):
        confs = build_conformers(data.part(name), config.conformers,
                                 drop_feat=config.drop_feat,
                                 workers=config.conformer_workers)
        views[name] = RandomConformer(confs, config.seed) \
            if name == 'train' else all_conformers(confs)
    return views


def _labels(items: Dataset, attr: str) -> Tensor:
    values = [d[attr] for d in items if attr in d]
    return torch.cat(values) if values else torch.zeros(0, 0)


def fit_label_stats(model: TaskModel, data: TaskData) -> None:
    """Sets the z-score statistics of every ``'zscore'`` task from its
    *observed* training labels.

    Raises:
        TaskError: a task has no observed training label.
    """
    train = data.part('train')
    columns = {'y': _labels(train, 'y'), 'atom_y': _labels(train, 'atom_y')}
    for task, head in model.dataset_heads(data.name):
        attr, cols = label_slices(data.tasks)[task.name]
        y = columns[attr][:, cols] if columns[attr].numel() else \
            torch.zeros(0, task.width)
        observed = torch.isfinite(y)
        if not observed.any():
            raise TaskError(f"task '{task.name}' of dataset '{data.name}' has "
                            f"no observed label in the training split "
                            f"({len(train)} molecules)")
        if task.normalize != 'zscore':
            continue
        mean = torch.stack([y[observed[:, c], c].mean()
                            for c in range(task.width)])
        std = torch.stack([y[observed[:, c], c].std()
                           if observed[:, c].sum() > 1 else torch.tensor(1.0)
                           for c in range(task.width)])
        head.set_stats(mean, torch.nan_to_num(std, nan=1.0))


def _num_atoms(view: Dataset) -> List[int]:
    if isinstance(view, RandomConformer):
        return [options[0].num_nodes for options in view.conformers]
    return [d.num_nodes for d in view]


def build_model(data: Sequence[TaskData], config: FinetuneConfig
                ) -> TaskModel:
    """The run's model: Uni-Mol2 (fresh from ``preset``, or with the
    architecture and weights of ``pretrained``) or a baseline, with one
    head per task, label statistics from the training labels."""
    groups = {d.name: d.tasks for d in data}
    pretrained = read_checkpoint(config.pretrained) \
        if config.pretrained and config.model == 'unimol2' else None
    if config.model == 'unimol2':
        try:
            backbone = load_backbone(pretrained, **config.model_overrides) \
                if pretrained else UniMol2.from_preset(
                    config.preset, lm_head=False, **config.model_overrides)
        except CheckpointError as e:
            raise CheckpointError(f'--pretrained {config.pretrained}: '
                                  f'{e.args[0]}') from None
        model = UniMol2MultiTask(backbone, groups, config.pooler_dropout)
    else:
        from ..bench.baselines import BaselineMultiTask
        model = BaselineMultiTask(config.model, groups)
    for d in data:
        fit_label_stats(model, d)
    if pretrained:
        # The backbone already holds the checkpoint's weights.
        kept = keep_matching_heads(model, pretrained) \
            if config.keep_heads else []
        loaded = len(model.backbone.state_dict())
        print(f'pretrained: {loaded} backbone tensors from '
              f'{config.pretrained} ({model.backbone.config.name}); heads '
              f'kept: {kept or "none"}')
    return model


def _check(data: Sequence[TaskData]) -> None:
    names = [d.name for d in data]
    if not data or len(set(names)) != len(names):
        raise ConfigError(f'give one or more datasets with distinct names, '
                          f'got {names}')
    for d in data:
        for part in ('train', 'test'):
            if len(d.split[part]) == 0:
                raise InputError(f"dataset '{d.name}': the {part} split is "
                                 f"empty (too few molecules for the split: "
                                 f"add molecules or choose another --split)")


def finetune(data: Union[TaskData, Sequence[TaskData]],
             config: FinetuneConfig) -> Dict[str, Any]:
    r"""Trains one model on :obj:`data` (one dataset or several) and
    reports test metrics per dataset and task (see the module docstring).

    Returns:
        dict: ``datasets`` (per dataset: split sizes, ``valid`` and
        ``test`` metrics per task, ``train_mean_baseline_mae`` of regression
        tasks), ``test_mae`` (flat, regression tasks, named ``task`` or
        ``dataset/task`` when several datasets), ``best_epoch``,
        ``epochs_run``, ``steps``, ``seconds``, ``data_wait`` (the
        data-wait fraction of the steps,
        :class:`~pyg_unimol2.train.data_wait.DataWait`) and ``config``.
    """
    data = [data] if isinstance(data, TaskData) else list(data)
    _check(data)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    views = {d.name: _views(d, config) for d in data}
    model = build_model(data, config).to(device)
    weights = {d.name: d.weight for d in data}
    source = TaskBatches({n: v['train'] for n, v in views.items()},
                         {n: _num_atoms(v['train']) for n, v in views.items()},
                         config.batch_size, config.max_tokens,
                         config.max_pairs, config.mix, config.temperature,
                         config.seed, device,
                         resolve_workers(config.num_workers))
    print(f'{model!r}: {sum(p.numel() for p in model.parameters()):,} '
          f'parameters; ' + '; '.join(
              f'{d.name} train/valid/test = {len(d.split["train"])}/'
              f'{len(d.split["valid"])}/{len(d.split["test"])}' for d in data))

    def loss_fn(model: TaskModel, item: Tuple[str, Any]
                ) -> Tuple[Tensor, Dict[str, float]]:
        name, batch = item
        with autocast(device, config.precision):
            outputs = model(batch, name)
        loss, parts = multitask_loss(model.groups[name], outputs,
                                     model.standardized_targets(name, batch))
        return weights[name] * loss, {f'loss/{name}/{t}': value
                                      for t, (value, _) in parts.items()}

    def evaluate(model: TaskModel) -> Tuple[float, Dict[str, float]]:
        scores, flat = {}, {}
        for name, view in views.items():
            metrics, score, _ = evaluate_view(
                model, view['valid'], name, config.batch_size, device)
            if config.select_on is None or name in config.select_on:
                scores[name] = score
            flat.update({f'{name}/{t}/{m}': v for t, per in metrics.items()
                         for m, v in per.items()})
        return mean_score(scores), flat

    def state() -> Dict[str, Any]:
        entry = task_model_state(model, asdict(config))
        entry.pop('model')
        return entry

    run = fit(model, source, loss_fn, evaluate, config.loop(),
              on_best=lambda m: save_task_model(m, out / 'best.pt',
                                                asdict(config)),
              state_extra=state)
    best = load_task_model(out / 'best.pt').to(device)
    results = dict(datasets={}, test_mae={}, best_epoch=run['best_epoch'],
                   epochs_run=run['epochs_run'], steps=run['steps'],
                   skipped_steps=run['skipped_steps'],
                   seconds=run['seconds'], data_wait=run['data_wait'],
                   config=asdict(config))
    for d in data:
        results['datasets'][d.name] = _report(best, d, views[d.name], config,
                                              out, device)
        for task in d.tasks:
            if task.kind == 'regression':
                key = task.name if len(data) == 1 else f'{d.name}/{task.name}'
                results['test_mae'][key] = \
                    results['datasets'][d.name]['test'][task.name]['mae']
    (out / 'results.json').write_text(json.dumps(json_safe(results), indent=2))
    return results


def _report(model: TaskModel, data: TaskData, views: Dict[str, Dataset],
            config: FinetuneConfig, out: Path,
            device: torch.device) -> Dict[str, Any]:
    """Validation and test metrics of the best model on one dataset, the
    MAE of predicting the training mean, and the test predictions CSV."""
    valid, _, _ = evaluate_view(model, views['valid'], data.name,
                                config.batch_size, device)
    test, _, (preds, labels) = evaluate_view(model, views['test'], data.name,
                                             config.batch_size, device)
    baseline = {}
    train_y = _labels(data.part('train'), 'y')
    for task in data.tasks:
        if task.kind == 'regression' and task.level == 'molecule':
            cols = label_slices(data.tasks)[task.name][1]
            mean = torch.nanmean(train_y[:, cols], dim=0)
            err = (labels[task.name] - mean).abs()
            baseline[task.name] = float(err[torch.isfinite(err)].mean())
    _write_predictions(out / f'test_predictions_{data.name}.csv', data,
                       preds, labels)
    return dict(sizes={k: len(v) for k, v in data.split.items()},
                tasks=[t.to_dict() for t in data.tasks], valid=valid,
                test=test, train_mean_baseline_mae=baseline)


def _write_predictions(path: Path, data: TaskData, preds: Dict[str, Tensor],
                       labels: Dict[str, Tensor]) -> None:
    """``index,smiles`` then, per molecule-level task, its label(s) and
    prediction(s) (probabilities for classification, per class for
    multi-class)."""
    test = data.part('test')
    tasks = [t for t in data.tasks if t.level == 'molecule']
    header = ['index', 'smiles']
    for t in tasks:
        header += [f'{c}' for c in t.columns]
        if t.kind == 'multiclass':
            header += [f'{t.name}_prob_{c}' for c in t.classes]
        elif t.kind == 'regression':
            header += [f'{c}_pred' for c in t.columns]
        else:
            header += [f'{c}_prob' for c in t.columns]
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row, index in enumerate(data.split['test'].tolist()):
            line = [index, getattr(test[row], 'smiles', '')]
            for t in tasks:
                line += [_fmt(v) for v in labels[t.name][row].tolist()]
                line += [_fmt(v) for v in preds[t.name][row].tolist()]
            writer.writerow(line)


def _fmt(value: float) -> str:
    return '' if math.isnan(value) else f'{value:.6g}'
