r"""Every checkpoint format of the project, read and written here.

=============== ============================================================
format          what tells it apart / what it holds
=============== ============================================================
``'tasks'``     ``format == 'pyg_unimol2.tasks'``: a fine-tuned
                :class:`~pyg_unimol2.models.multitask.TaskModel` (``model``
                state, ``model_config`` of the backbone, ``groups``: the
                tasks of each dataset, ``pooler_dropout``, ``config``). The
                resume states of :mod:`pyg_unimol2.train.loop` are this
                format plus a ``train_state`` entry.
``'pretrain'``  ``format == 'pyg_unimol2.pretrain'`` (or, written before
                the field existed, ``world_size`` + ``model_config``): a
                :func:`~pyg_unimol2.pretrain.pretrain` step checkpoint
                (``model`` in official tensor names, optimizer, scheduler,
                sampler position ...).
``'regressor'`` ``target_names`` + ``model_config``: the single-head
                regression checkpoints of pyg-unimol2 0.1, read as a
                ``'tasks'`` checkpoint of regression tasks.
``'official'``  anything else that holds Uni-Mol2 tensors: the official
                training code's Uni-Core checkpoints and unimol_tools'
                state dicts (:mod:`pyg_unimol2.models.official`).
=============== ============================================================

Any of them gives a backbone (:func:`load_backbone`: ``embed``,
``finetune --pretrained``, whose architecture is taken from the
checkpoint); ``'tasks'`` and ``'regressor'`` also give a task model
(:func:`load_task_model`: ``predict``).
"""
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ..errors import UserError
from .bundled import bundled_file
from .hub import HUB_PREFIX, download_weights
from .integrity import seal, verify
from .writer import list_checkpoints
from ..models.multitask import TaskModel, UniMol2MultiTask, module_key
from ..models.official import load_official
from ..models.unimol2 import UniMol2
from ..tasks import Task

__all__ = ['read_checkpoint', 'resume_checkpoint', 'load_energy_force_model', 'checkpoint_format', 'load_backbone',
           'load_task_model', 'task_model_state', 'save_task_model',
           'pretrain_state', 'init_from_checkpoint', 'keep_matching_heads',
           'CheckpointError',
           'atomic_save']

TASKS, PRETRAIN = 'pyg_unimol2.tasks', 'pyg_unimol2.pretrain'
Source = Union[str, os.PathLike, Dict[str, Any]]


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or of the wrong kind."""


class ForeignCheckpointError(CheckpointError, KeyError):
    """A readable checkpoint that holds no Uni-Mol2 model (a ``KeyError``
    as the state-dict check it comes from)."""


def read_checkpoint(source: Source) -> Dict[str, Any]:
    """The checkpoint object of :obj:`source` (a path, ``hub:NAME`` for
    official weights by name (:mod:`.hub`), the name of weights shipped
    with the package (:mod:`.bundled`), or an already loaded dict),
    with a clear error for a missing or unreadable file."""
    if isinstance(source, dict):
        return source
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        source = download_weights(source[len(HUB_PREFIX):])
    elif isinstance(source, str) and not os.path.exists(source):
        source = bundled_file(source) or source  # shipped weights by name
    path = Path(source)
    if path.is_dir():
        raise CheckpointError(f'checkpoint {path} is a directory (give a .pt '
                              f'file, e.g. {path / "best.pt"})')
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} not found (give the path '
                              f'of a .pt written by unimol2 finetune or '
                              f'pretrain, or an official Uni-Mol2 '
                              f'checkpoint)')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError,
            zipfile.BadZipFile, AttributeError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        reason = reason.split('. ')[0]  # torch adds sentences of advice
        raise CheckpointError(f'checkpoint {path} cannot be read (corrupt '
                              f'or not a PyTorch checkpoint: {reason}); '
                              f'give another checkpoint or write this one '
                              f'again') from None
    if not isinstance(obj, dict):
        raise CheckpointError(f'checkpoint {path} holds a '
                              f'{type(obj).__name__}, not a checkpoint dict')
    if verify(obj) is False:
        raise CheckpointError(f'checkpoint {path} is damaged (checksum '
                              f'mismatch); use an earlier checkpoint')
    return obj


def resume_checkpoint(directory: Union[str, os.PathLike]
                      ) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """``(path, checkpoint)`` of the newest checkpoint of a run's
    checkpoint :obj:`directory` that reads and verifies, or :obj:`None`;
    each damaged newer one is reported (a :class:`UserWarning`) and passed
    over."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, read_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f'{e}; resuming from an earlier one', stacklevel=2)
    return None


def checkpoint_format(checkpoint: Dict[str, Any]) -> str:
    """``'tasks'``, ``'pretrain'``, ``'regressor'`` or ``'official'`` (see
    the module docstring)."""
    kind = checkpoint.get('format')
    if kind == TASKS:
        return 'tasks'
    if kind == PRETRAIN or ('world_size' in checkpoint and
                            'model_config' in checkpoint):
        return 'pretrain'
    if 'target_names' in checkpoint and 'model_config' in checkpoint:
        return 'regressor'
    return 'official'


def _backbone_state(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    prefix = 'backbone.'
    return {k[len(prefix):]: v for k, v in checkpoint['model'].items()
            if k.startswith(prefix)}


def _bare(model: UniMol2) -> UniMol2:
    """:obj:`model` without the pretraining and official heads."""
    model.lm_head = None
    model.config.lm_head = False
    model.classification_heads = torch.nn.ModuleDict()
    return model


def load_backbone(source: Source, *, heads: bool = False,
                  **overrides) -> UniMol2:
    r"""The :class:`UniMol2` encoder of any checkpoint, its architecture
    taken from the checkpoint.

    Args:
        source: a checkpoint path or loaded object, of any format.
        heads (bool, optional): keep the masked-atom and official
            classification heads of pretraining / official checkpoints.
            (default: :obj:`False`)
        **overrides: non-architecture :class:`UniMol2Config` fields (dropout
            rates, ``chunk_size``, ``checkpointing``).
    """
    checkpoint = read_checkpoint(source)
    kind = checkpoint_format(checkpoint)
    if kind in ('tasks', 'regressor'):
        model = UniMol2(dict(checkpoint['model_config'], lm_head=False),
                        **overrides)
        model.load_state_dict(_backbone_state(checkpoint))
        return model
    if kind == 'pretrain':
        model = UniMol2(checkpoint['model_config'], **overrides)
        model.load_state_dict(checkpoint['model'])
    else:
        try:
            model = load_official(checkpoint, strict=False, **overrides)[0]
        except (KeyError, TypeError) as e:
            if 'not a Uni-Mol2 state dict' not in str(e):
                raise
            raise ForeignCheckpointError(
                f'{_name(source)} is not a Uni-Mol2 checkpoint ('
                f'{e.args[0]}); give a .pt written by unimol2 finetune or '
                f'pretrain, or an official Uni-Mol2 checkpoint') from None
    return model if heads else _bare(model)


def load_energy_force_model(source: Source):
    r"""The :class:`~pyg_unimol2.models.EnergyForceModel` of a joint
    energy/force pretraining checkpoint (a ``'pretrain'`` checkpoint with an
    ``energy_force`` entry): backbone, heads, force modes and statistics,
    with the averaged weights if the run kept an average (``ema_decay``).

    Raises:
        CheckpointError: the checkpoint has no energy/force heads.
    """
    from ..models.energy_force import EnergyForceModel

    checkpoint = read_checkpoint(source)
    heads = checkpoint.get('energy_force')
    if checkpoint_format(checkpoint) != 'pretrain' or heads is None:
        raise CheckpointError(f'{_name(source)} holds no energy/force heads '
                              f'(give a checkpoint of a pretraining run '
                              f'with domains)')
    model = EnergyForceModel(load_backbone(checkpoint), heads['force_modes'])
    model.heads.load_state_dict(heads['heads'])
    if checkpoint.get('ema'):
        model.load_state_dict(checkpoint['ema'], strict=False)
    return model


def _groups(checkpoint: Dict[str, Any]) -> Dict[str, List[Task]]:
    if checkpoint_format(checkpoint) == 'regressor':
        return {'data': [Task(name=n) for n in checkpoint['target_names']]}
    return {d: [Task(**t) for t in tasks]
            for d, tasks in checkpoint['groups'].items()}


def _regressor_state(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """A 0.1 regressor state (one ``head`` over all targets, ``mean`` /
    ``std`` buffers) as per-task heads."""
    state = dict(checkpoint['model'])
    head = {k[len('head.'):]: state.pop(k) for k in list(state)
            if k.startswith('head.')}
    mean, std = state.pop('mean'), state.pop('std')
    for i, name in enumerate(checkpoint['target_names']):
        prefix = f'heads.data.{module_key(name)}.'
        state[prefix + 'head.dense.weight'] = head['dense.weight']
        state[prefix + 'head.dense.bias'] = head['dense.bias']
        state[prefix + 'head.out_proj.weight'] = head['out_proj.weight'][i:i + 1]
        state[prefix + 'head.out_proj.bias'] = head['out_proj.bias'][i:i + 1]
        state[prefix + 'mean'] = mean[i:i + 1]
        state[prefix + 'std'] = std[i:i + 1]
    return state


def load_task_model(source: Source) -> TaskModel:
    """The fine-tuned :class:`~pyg_unimol2.models.multitask.TaskModel` of a
    ``'tasks'`` (or 0.1 ``'regressor'``) checkpoint.

    Raises:
        CheckpointError: the checkpoint has no task heads (pretraining or
            official), naming what to do instead.
    """
    checkpoint = read_checkpoint(source)
    kind = checkpoint_format(checkpoint)
    if kind not in ('tasks', 'regressor'):
        raise CheckpointError(
            f'{_name(source)} is a {kind} checkpoint without task heads: '
            f'fine-tune it first (unimol2 finetune --pretrained ...), or '
            f'use unimol2 embed for its representations')
    groups = _groups(checkpoint)
    if checkpoint.get('model_kind', 'unimol2') != 'unimol2':
        from ..bench.baselines import BaselineMultiTask
        model = BaselineMultiTask(checkpoint['model_kind'], groups)
    else:
        backbone = UniMol2(dict(checkpoint['model_config'], lm_head=False))
        model = UniMol2MultiTask(backbone, groups,
                                 checkpoint.get('pooler_dropout', 0.0))
    state = (_regressor_state(checkpoint) if kind == 'regressor' else
             checkpoint['model'])
    model.load_state_dict(state)
    return model


def _name(source: Source) -> str:
    return 'the checkpoint' if isinstance(source, dict) else str(source)


def task_model_state(model: TaskModel, config: Optional[Dict] = None
                     ) -> Dict[str, Any]:
    """The ``'tasks'`` checkpoint of :obj:`model`."""
    backbone = getattr(model, 'backbone', None)
    return dict(format=TASKS, model=model.state_dict(),
                model_kind=getattr(model, 'kind', 'unimol2'),
                model_config=None if backbone is None else
                backbone.config.to_dict(),
                groups={d: [t.to_dict() for t in tasks]
                        for d, tasks in model.groups.items()},
                pooler_dropout=model.pooler_dropout, config=config)


def atomic_save(obj: Any, path: Union[str, os.PathLike]) -> None:
    """``torch.save`` of :obj:`obj` sealed with its checksum
    (:func:`~pyg_unimol2.checkpoints.integrity.seal`) to a temporary file,
    then an atomic rename: a kill leaves the old file or the new one, never
    half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    torch.save(seal(obj), tmp)
    os.replace(tmp, path)


def save_task_model(model: TaskModel, path: Union[str, os.PathLike],
                    config: Optional[Dict] = None) -> None:
    """Writes :func:`task_model_state` atomically."""
    atomic_save(task_model_state(model, config), path)


def pretrain_state(model: UniMol2, **training) -> Dict[str, Any]:
    """A ``'pretrain'`` checkpoint: the model in official tensor names plus
    the training state (optimizer, scheduler, step, sampler position ...)
    given as keywords."""
    return dict(format=PRETRAIN, model=model.state_dict(),
                model_config=model.config.to_dict(), **training)


def keep_matching_heads(model: TaskModel, source: Source) -> List[str]:
    r"""Copies into :obj:`model` every head of a ``'tasks'`` (or 0.1
    ``'regressor'``) checkpoint whose task has the same name, kind, level
    and output size: weights and label statistics, so its predictions
    start where they ended. Other heads (and other formats) are left as
    they are.

    Returns:
        List[str]: the tasks whose head was kept.
    """
    checkpoint = read_checkpoint(source)
    kind = checkpoint_format(checkpoint)
    if kind not in ('tasks', 'regressor'):
        return []
    state = (_regressor_state(checkpoint) if kind == 'regressor' else
             checkpoint['model'])
    old = {}
    for dataset, tasks in _groups(checkpoint).items():
        for task in tasks:
            prefix = f'heads.{module_key(dataset)}.{module_key(task.name)}.'
            old[task.name, task.kind, task.level, task.num_outputs] = {
                k[len(prefix):]: v for k, v in state.items()
                if k.startswith(prefix)}
    kept = []
    for dataset, tasks in model.groups.items():
        for task in tasks:
            key = (task.name, task.kind, task.level, task.num_outputs)
            if key in old:
                model.head(dataset, task.name).load_state_dict(old[key])
                kept.append(task.name)
    return kept


def init_from_checkpoint(model: UniMol2MultiTask, source: Source, *,
                         keep_heads: bool = True) -> Tuple[int, List[str]]:
    r"""Initialises :obj:`model` from a checkpoint of any format: the
    backbone (its architecture must be the checkpoint's; build the model
    with :func:`load_backbone` to take it from there) and, with
    :obj:`keep_heads`, the heads of matching tasks
    (:func:`keep_matching_heads`).

    Returns:
        (int, List[str]): backbone tensors loaded and the heads kept.
    """
    checkpoint = read_checkpoint(source)
    backbone = load_backbone(checkpoint)
    own = model.backbone.state_dict()
    state = backbone.state_dict()
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    if wrong or missing:
        raise CheckpointError(
            f'{_name(source)} has another architecture '
            f'({backbone.config.name}: mismatched {wrong[:3]}, missing '
            f'{missing[:3]}); build the backbone with load_backbone')
    model.backbone.load_state_dict(state)
    kept = keep_matching_heads(model, checkpoint) if keep_heads else []
    return len(state), kept
