r"""Fully sharded data parallel pretraining (FSDP2): ``unimol2 pretrain
--fsdp``.

.. code-block:: bash

    torchrun --nproc_per_node=8 -m pyg_unimol2.pretrain --fsdp \
        --preset 1.1B --precision bf16 --store STORE ...

:func:`shard_model` applies :func:`torch.distributed.fsdp.fully_shard` to
every :class:`~pyg_unimol2.nn.UniMol2Block`, then to the root model: each
of the ``W`` ranks keeps ``1/W`` of every parameter, gradient and AdamW
moment (:class:`~torch.distributed.tensor.DTensor` s sharded on dim 0) and
all-gathers a block's parameters just before its forward and its backward.
The rest of the loop is that of DDP (:mod:`~pyg_unimol2.pretrain.trainer`):
the same batches per rank, gradients averaged over the ranks (by a
reduce-scatter instead of an all-reduce, once per micro-batch), the same
clipping (the norm is global) and skipping of non-finite steps.

**Mixed precision.** With ``--precision bf16`` (``fp16``) the blocks
all-gather their parameters in bf16 and compute in bf16, inputs included
(:class:`~torch.distributed.fsdp.MixedPrecisionPolicy` ``param_dtype``;
as Uni-Core's half-precision model), reduce their gradients in fp32, and
the optimizer steps the fp32 shards (the master weights). The root's own
parameters (embeddings, the Gaussian kernel, the heads: a few percent of a
paper preset) stay fp32, under autocast as without FSDP.

**Checkpoints** (:class:`ShardedCheckpoints`) are one directory each,
``OUT/checkpoints/step_XXXXXXXX/``:

================== =========================================================
``__R_0.distcp``   rank ``R``'s shards of the model, the optimizer and the
                   EMA (:func:`torch.distributed.checkpoint.save`)
``.metadata``      DCP's index of the shards
``train_state.pt`` step, sampler position, skip count, scheduler and
                   loss-scaler states, world size, model and run config
                   (sealed with its checksum)
``manifest.json``  byte count and BLAKE2b digest of each file above
================== =========================================================

Every rank writes its shards into ``step_XXXXXXXX.tmp/``, the files are
hashed (file ``i`` by rank ``i mod W``), rank 0 writes the manifest last and
renames the directory: a kill leaves complete checkpoints under their final
names and possibly a ``.tmp`` directory, removed at the next start. A run
resumes from the newest checkpoint whose files all match the manifest
(missing, truncated or altered files are reported and the checkpoint is
passed over), with the same number of ranks (the sampler deals the batches
by rank). DCP itself could reshard to another world size; the data stream
could not follow.

**Consolidation.** :func:`consolidate` reads the model and EMA tensors of a
sharded checkpoint in one process (no process group) into a regular
``'pretrain'`` checkpoint (:func:`~pyg_unimol2.checkpoints.pretrain_state`,
without the optimizer), which
:func:`~pyg_unimol2.checkpoints.load_backbone`, ``unimol2 finetune
--pretrained`` and ``unimol2 embed`` read; the trainer writes
``OUT/consolidated.pt`` from the final checkpoint at the end of a run.
"""
import hashlib
import json
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (get_state_dict,
                                                     set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from ..checkpoints import (CheckpointError, atomic_save, list_checkpoints,
                           pretrain_state, read_checkpoint)
from ..checkpoints.integrity import seal
from ..errors import ConfigError
from ..models.unimol2 import UniMol2
from ..nn import UniMol2Block
from ..train.ema import ExponentialMovingAverage
from .config import PretrainConfig

__all__ = ['check_fsdp', 'shard_model', 'mixed_precision_policy',
           'ShardedCheckpoints', 'list_sharded_checkpoints',
           'verify_sharded_checkpoint', 'consolidate', 'CONSOLIDATED']

#: File name of the consolidated checkpoint written at the end of a run.
CONSOLIDATED = 'consolidated.pt'
MANIFEST, TRAIN_STATE = 'manifest.json', 'train_state.pt'
_NAME = re.compile(r'^step_(\d{8,})$')
_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}

# UniMol2Output.cls / .atoms are views of the atom track; FSDP2 warns that
# an in-place edit of such a view would skip its pre-backward hook. No
# consumer of the outputs edits them in place.
warnings.filterwarnings('ignore', category=UserWarning, message=(
    r'FSDP2-wrapped module \(FSDPUniMol2\) returned a view tensor'))


def check_fsdp(config: PretrainConfig, directory: Union[str, os.PathLike]
               ) -> None:
    """Raises :class:`~pyg_unimol2.errors.ConfigError` if :obj:`config`
    cannot run as asked: ``fsdp`` without ``torchrun`` or with energy/force
    domains, or a checkpoint :obj:`directory` of the other kind (DDP's
    ``step_*.pt`` files, FSDP's ``step_*/`` directories)."""
    if config.fsdp:
        if 'WORLD_SIZE' not in os.environ:
            raise ConfigError('fsdp needs a process group: launch with '
                              'torchrun --nproc_per_node=N -m '
                              'pyg_unimol2.pretrain --fsdp ...')
        if config.domains:
            raise ConfigError('fsdp shards the self-supervised recipe only; '
                              'run energy/force domains without fsdp')
    other = (list_checkpoints(directory) if config.fsdp else
             list_sharded_checkpoints(directory))
    if other:
        kind = 'DDP (step_*.pt)' if config.fsdp else 'sharded (--fsdp)'
        raise ConfigError(f'{directory} holds {kind} checkpoints, e.g. '
                          f'{other[-1].name}: resume the run as it was '
                          f'started ({"without" if config.fsdp else "with"}'
                          f' --fsdp) or give another --out')


def mixed_precision_policy(precision: str) -> MixedPrecisionPolicy:
    """The policy of the encoder blocks: bf16 / fp16 parameters and
    inputs for all-gather and compute, fp32 gradient reduction; the default
    (fp32) for ``'fp32'``."""
    if precision not in ('fp32', *_DTYPES):
        raise ConfigError(f"precision must be 'fp32', 'bf16' or 'fp16', got "
                          f"{precision!r}")
    if precision == 'fp32':
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=_DTYPES[precision],
                                reduce_dtype=torch.float32)


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def shard_model(model: nn.Module, device: torch.device,
                precision: str = 'fp32') -> nn.Module:
    r"""Applies FSDP2 in place: one group per
    :class:`~pyg_unimol2.nn.UniMol2Block` (with
    :func:`mixed_precision_policy`), then the root for the remaining
    parameters, over all ranks of the initialised process group.

    The root reshards after its forward too, so between steps every
    parameter is a shard: what edits the shards in place (the EMA swapped in
    for validation, a checkpoint being loaded) is seen by the next forward.

    Returns:
        torch.nn.Module: :obj:`model`, now an ``FSDPModule``; build the
        optimizer (and EMA) on its parameters after this call.
    """
    if not _is_dist():
        raise ConfigError('fsdp needs a process group: launch with torchrun')
    mesh = init_device_mesh(device.type, (dist.get_world_size(), ))
    policy = mixed_precision_policy(precision)
    for module in model.modules():
        if isinstance(module, UniMol2Block):
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    return model


def list_sharded_checkpoints(directory: Union[str, os.PathLike]
                             ) -> List[Path]:
    """Checkpoint directories of :obj:`directory` under their final names
    (not checked), oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Silences DCP's warning that it saves or loads in one process
    (meant here: :func:`consolidate`, a run without a process group)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=(
            'torch.distributed is (disabled|unavailable)'))
        yield


def _gather(mine: Dict[str, Any], world: int) -> Dict[str, Any]:
    """The union of every rank's :obj:`mine` (all ranks call)."""
    if world == 1:
        return mine
    parts: List[Any] = [None] * world
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}


def _hash_files(directory: Path, names: List[str], rank: int,
                world: int) -> Dict[str, Dict[str, Any]]:
    """``{name: {bytes, blake2b}}`` of :obj:`names`, file ``i`` hashed by
    rank ``i mod world``; a missing file maps to :obj:`None`."""
    mine = {}
    for i, name in enumerate(names):
        if i % world == rank:
            path = directory / name
            mine[name] = (dict(bytes=path.stat().st_size,
                               blake2b=_digest(path))
                          if path.is_file() else None)
    return _gather(mine, world)


def _damage(path: Path, rank: int = 0, world: int = 1) -> Optional[str]:
    """Why the checkpoint directory :obj:`path` is not intact, or
    :obj:`None` (with ``world > 1`` every rank calls and gets the same
    answer)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        expected = dict(manifest['files'])
    except (OSError, ValueError, KeyError, TypeError):
        return f'it has no readable {MANIFEST}'
    if not {'.metadata', TRAIN_STATE} <= set(expected):
        return f'its {MANIFEST} lists no .metadata or {TRAIN_STATE}'
    found = _hash_files(path, sorted(expected), rank, world)
    for name in sorted(expected):
        if found[name] is None:
            return f'{name} is missing'
        if found[name]['bytes'] != expected[name]['bytes']:
            return (f'{name} has {found[name]["bytes"]} bytes, the manifest '
                    f'{expected[name]["bytes"]}')
        if found[name]['blake2b'] != expected[name]['blake2b']:
            return f'{name} is damaged (checksum mismatch)'
    return None


def verify_sharded_checkpoint(path: Union[str, os.PathLike]) -> None:
    """Checks in this process that every file of the checkpoint directory
    :obj:`path` has the byte count and BLAKE2b digest of its manifest.

    Raises:
        CheckpointError: naming the first missing or damaged file.
    """
    reason = _damage(Path(path))
    if reason is not None:
        raise CheckpointError(f'sharded checkpoint {path} is damaged: '
                              f'{reason}; use an earlier checkpoint')


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Renames :obj:`path` to a ``.tmp`` name (no longer a checkpoint),
    then deletes it."""
    trash = path.with_name(path.name + '.tmp')
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash)


class ShardedCheckpoints:
    r"""Sharded checkpoints of an FSDP run (see the module docstring):
    every rank calls :meth:`save` and :meth:`resume` together.

    Args:
        directory (str or Path): the run's checkpoint directory.
        keep (int): newest checkpoints kept.
        model (torch.nn.Module): the sharded model (:func:`shard_model`), a
            :class:`~pyg_unimol2.models.UniMol2`.
        optimizer (torch.optim.Optimizer): its optimizer.
        scheduler (torch.optim.lr_scheduler.LRScheduler): the schedule.
        scaler (torch.amp.GradScaler): the loss scaler.
        ema (ExponentialMovingAverage, optional): the weight average (of
            the shards).
    """
    def __init__(self, directory: Union[str, os.PathLike], keep: int,
                 model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler,
                 scaler: torch.amp.GradScaler,
                 ema: Optional[ExponentialMovingAverage] = None) -> None:
        if keep < 1:
            raise ValueError(f'keep must be positive, got {keep}')
        self.directory, self.keep = Path(directory), keep
        self.model, self.optimizer = model, optimizer
        self.scheduler, self.scaler, self.ema = scheduler, scaler, ema
        self.rank = dist.get_rank() if _is_dist() else 0
        self.world = dist.get_world_size() if _is_dist() else 1
        if self.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            for stale in self.directory.glob('step_*.tmp'):
                shutil.rmtree(stale)
        if self.world > 1:
            dist.barrier()

    def path(self, step: int) -> Path:
        """Final directory of the checkpoint of :obj:`step`."""
        return self.directory / f'step_{step:08d}'

    def _sharded(self) -> Dict[str, Any]:
        model, optim = get_state_dict(self.model, self.optimizer)
        state = dict(model=model, optim=optim)
        if self.ema is not None:
            state['ema'] = self.ema.shadow
        return state

    def save(self, step: int, **training: Any) -> Path:
        """Writes the checkpoint of :obj:`step`: the shards, and
        :obj:`training` (epoch, position, skip count, config ...) with the
        scheduler and scaler states in ``train_state.pt``.

        Returns:
            Path: its directory.
        """
        final = self.path(step)
        tmp = final.with_name(final.name + '.tmp')
        if self.rank == 0:
            tmp.mkdir(parents=True, exist_ok=True)  # or by DCP on a rank
            state = dict(step=step, world_size=self.world,
                         scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(),
                         model_config=self.model.config.to_dict(),
                         **training)
            with open(tmp / TRAIN_STATE, 'wb') as f:
                torch.save(seal(state), f)
                f.flush()
                os.fsync(f.fileno())
        with _single_process_quiet():
            dcp.save(self._sharded(), checkpoint_id=tmp)
        names = [sorted(p.name for p in tmp.iterdir())
                 if self.rank == 0 else None]
        if self.world > 1:
            dist.broadcast_object_list(names, src=0)
        files = _hash_files(tmp, names[0], self.rank, self.world)
        if self.rank == 0:
            with open(tmp / MANIFEST, 'w') as f:
                json.dump(dict(format='pyg_unimol2.sharded', step=step,
                               world_size=self.world, files=files), f,
                          indent=1)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            if final.exists():  # written before, by a run that resumed
                _remove(final)  # from an earlier step
            os.replace(tmp, final)
            _fsync_dir(self.directory)
            for old in list_sharded_checkpoints(self.directory)[:-self.keep]:
                _remove(old)
        return final

    def resume(self) -> Optional[Dict[str, Any]]:
        """Loads the newest intact checkpoint into the model, optimizer,
        EMA, scheduler and scaler; each damaged newer one is reported (a
        :class:`UserWarning`, on rank 0) and passed over.

        Returns:
            dict: the ``train_state.pt`` of the checkpoint (``step``,
            ``epoch``, ``position``, ``skipped`` ...), or :obj:`None` if
            there is none.

        Raises:
            CheckpointError: it was written by another number of ranks.
        """
        found = [list_sharded_checkpoints(self.directory)
                 if self.rank == 0 else None]
        if self.world > 1:
            dist.broadcast_object_list(found, src=0)
        for path in reversed(found[0]):
            reason = _damage(path, self.rank, self.world)
            if reason is not None:
                if self.rank == 0:
                    warnings.warn(f'sharded checkpoint {path} is damaged: '
                                  f'{reason}; resuming from an earlier one',
                                  stacklevel=2)
                continue
            state = read_checkpoint(path / TRAIN_STATE)
            if state['world_size'] != self.world:
                raise CheckpointError(
                    f'{path} was written by {state["world_size"]} ranks; '
                    f'resume with the same number (torchrun '
                    f'--nproc_per_node={state["world_size"]})')
            sharded = self._sharded()
            with _single_process_quiet():
                dcp.load(sharded, checkpoint_id=path)
            set_state_dict(self.model, self.optimizer,
                           model_state_dict=sharded['model'],
                           optim_state_dict=sharded['optim'])
            self.scheduler.load_state_dict(state['scheduler'])
            self.scaler.load_state_dict(state['scaler'])
            return state
        return None


def consolidate(checkpoint: Union[str, os.PathLike],
                path: Union[str, os.PathLike]) -> Path:
    r"""Writes the sharded :obj:`checkpoint` (a ``step_XXXXXXXX``
    directory) as one regular ``'pretrain'`` checkpoint file :obj:`path`:
    the full model in official tensor names, its config, the full EMA (if
    the run kept one) and the training counters, without the optimizer.

    Runs in one process, without a process group, after verifying the
    checkpoint (:func:`verify_sharded_checkpoint`); memory: the model (and
    EMA) in full, on the CPU.

    Returns:
        Path: :obj:`path`.
    """
    checkpoint, path = Path(checkpoint), Path(path)
    if not (checkpoint / MANIFEST).is_file():
        raise CheckpointError(f'{checkpoint} is not a sharded checkpoint '
                              f'(no {MANIFEST}; give a step_XXXXXXXX '
                              f'directory of a --fsdp run)')
    verify_sharded_checkpoint(checkpoint)
    train = read_checkpoint(checkpoint / TRAIN_STATE)
    metadata = FileSystemReader(checkpoint).read_metadata()
    full: Dict[str, Dict[str, torch.Tensor]] = {'model': {}, 'ema': {}}
    for key, item in metadata.state_dict_metadata.items():
        group, _, name = key.partition('.')
        if group in full and isinstance(item, TensorStorageMetadata):
            full[group][name] = torch.empty(item.size,
                                            dtype=item.properties.dtype)
    ema = full.pop('ema') or None
    if ema is not None:
        full['ema'] = ema
    with _single_process_quiet():
        dcp.load(full, checkpoint_id=checkpoint, no_dist=True)
    model = UniMol2(train['model_config'])
    model.load_state_dict(full['model'])
    training = {k: v for k, v in train.items() if k != 'model_config'}
    atomic_save(pretrain_state(model, ema=ema, **training), path)
    return path
