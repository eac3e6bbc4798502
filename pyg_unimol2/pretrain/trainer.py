r"""The pretraining loop, single-process or DDP under ``torchrun``.

.. code-block:: bash

    torchrun --nproc_per_node=2 -m pyg_unimol2.pretrain --store STORE ...

Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), every
rank joins a process group (NCCL on GPU, gloo on CPU) and trains a
:class:`~torch.nn.parallel.DistributedDataParallel` replica on its own,
disjoint share of every epoch's batches
(:class:`~pyg_unimol2.data.samplers.DynamicBatchSampler`, optionally over a
:class:`~pyg_unimol2.data.samplers.ScaffoldTemperatureSampler`). One
optimizer step per rank takes :obj:`accumulation` micro-batches; gradients
are all-reduced on the last one only (``no_sync``). A step whose loss or
gradient is not finite on any rank is skipped by all ranks (the flag is
all-reduced) and counted.

**Exact resume.** The randomness of step ``s`` on rank ``r`` (corruption of
micro-batch ``k``: seed ``(seed, 1, r, s, k)``; dropout: the global RNG
seeded with ``(seed, 2, r, s)``) is a function of the step, so the random
state needs no saving: a checkpoint holds the model, optimizer, scheduler
and loss-scaler states, the step, the sampler position (epoch and
micro-batch index) and the skip count, and a run killed at any time and
restarted in the same directory continues the same loss trajectory.

What is trained is a *recipe*: its model, batches, micro-batch
preparation, optimizer step, validation and checkpoint state. The loop here
is the same for every recipe: Uni-Mol2's self-supervised objectives
(:class:`~pyg_unimol2.pretrain.denoising.DenoisingRecipe`, the default) or
joint multi-domain pretraining on energies and forces
(:class:`~pyg_unimol2.pretrain.energy_force.EnergyForceRecipe`, when the
run names ``domains``).

With :obj:`fsdp` the model is sharded instead (FSDP2,
:mod:`~pyg_unimol2.pretrain.sharding`): every rank saves its shards into
one checkpoint directory per step, resumes from the newest intact one, and
rank 0 consolidates the last into ``OUT/consolidated.pt`` at the end.

Every rank's batches are read and collated ahead of the step by
:obj:`num_workers` persistent DataLoader worker processes
(:class:`~pyg_unimol2.data.prefetch.EpochLoader`; what a batch holds does
not depend on their number); the share of the step time spent waiting for
them is logged every :obj:`log_every` steps (``data_wait``,
:class:`~pyg_unimol2.train.data_wait.DataWait`).

Rank 0 alone writes checkpoints (:class:`~pyg_unimol2.checkpoints.CheckpointWriter`),
TensorBoard logs, ``metrics.jsonl`` (one line per step, one per validation),
``learning_curves.png`` (:class:`~pyg_unimol2.plots.LearningCurves`, after
every validation and at the end) and the progress bar.
"""
import json
import os
from contextlib import nullcontext
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..checkpoints import (CheckpointWriter, read_checkpoint,
                           resume_checkpoint)
from ..data.samplers import DynamicBatchSampler
from ..data.store import StoreError
from ..plots import LearningCurves
from ..train.data_wait import DataWait
from ..train.ema import ExponentialMovingAverage
from ..train.loop import lr_lambda, seed_of, truncate_metrics
from ..train.optim import layerwise_lr_groups
from .config import PretrainConfig
from .denoising import Collate, DenoisingRecipe, coords_2d, train_step
from .sharding import (CONSOLIDATED, ShardedCheckpoints, check_fsdp,
                       consolidate, shard_model)

__all__ = ['pretrain', 'train_step', 'Collate', 'coords_2d']


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _micro_batches(sampler: DynamicBatchSampler,
                   loader: Callable[[List[List[Any]]], Iterator[Any]],
                   epoch: int, start: int
                   ) -> Iterator[Tuple[int, int, Tuple]]:
    """Endless ``(epoch, next position, item)`` from position ``start`` of
    :obj:`epoch` on (:obj:`loader` collates a list of batches); batches
    whose molecules were all skipped as damaged are passed over (a whole
    epoch of them is an error)."""
    while True:
        sampler.set_epoch(epoch)
        batches = list(sampler)
        if not batches:
            raise ValueError('the sampler gives this rank no batches')
        readable = False
        for i, item in enumerate(loader(batches[start:]), start + 1):
            if item is not None:
                readable = True
                yield epoch, i, item
        if not readable and start == 0:
            raise StoreError(f'epoch {epoch}: no molecule of this rank\'s '
                             f'{len(batches)} batches could be read '
                             f'(every one failed verification); rebuild the '
                             f'store with unimol2 build-hdf5')
        epoch, start = epoch + 1, 0


def _setup(config: PretrainConfig) -> Tuple[int, int, torch.device]:
    """Rank, world size and device; joins the process group under
    ``torchrun``."""
    if config.threads:
        torch.set_num_threads(config.threads)
    kind = config.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if 'WORLD_SIZE' not in os.environ:
        return 0, 1, torch.device(kind)
    local = int(os.environ.get('LOCAL_RANK', 0))
    device = torch.device(f'cuda:{local}') if kind == 'cuda' else \
        torch.device(kind)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if not _is_dist():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return dist.get_rank(), dist.get_world_size(), device


def _recipe(config: PretrainConfig, rank: int, world: int,
            device: torch.device):
    """The recipe of :obj:`config`: joint energy/force pretraining if it
    names :obj:`domains`, else the self-supervised objectives."""
    if config.domains:
        from .energy_force import EnergyForceRecipe
        return EnergyForceRecipe(config, rank, world, device)
    return DenoisingRecipe(config, rank, world, device)


def pretrain(config: PretrainConfig) -> Dict[str, float]:
    r"""Pretrains a :class:`~pyg_unimol2.models.UniMol2` on the store
    :obj:`config.store` for :obj:`config.max_steps` steps, resuming from
    the newest checkpoint of ``OUT/checkpoints`` if there is one.

    Returns:
        dict: the last step's metrics (those of :func:`train_step`, plus
        ``lr``, ``skipped_steps`` so far and ``molecules_per_s``, all
        logged every step to ``metrics.jsonl`` and every
        :obj:`config.log_every` steps to TensorBoard under ``train/``), the
        last validation metrics prefixed ``valid_`` (TensorBoard:
        ``valid/``), if the validation split is not empty, and
        ``data_wait``, the data-wait fraction of this rank's steps
        (:class:`~pyg_unimol2.train.data_wait.DataWait`; logged every
        :obj:`config.log_every` steps over those steps).
    """
    check_fsdp(config, Path(config.out) / 'checkpoints')
    rank, world, device = _setup(config)
    out = Path(config.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / 'config.json').write_text(json.dumps(config.to_dict(),
                                                    indent=2))
    recipe = _recipe(config, rank, world, device)
    raw = model = recipe.model
    if config.fsdp:
        raw = model = shard_model(raw, device, config.precision)
    elif world > 1:
        model = DistributedDataParallel(
            raw, find_unused_parameters=recipe.find_unused_parameters)
    # Weight decay on every parameter, as Uni-Core's Adam.
    params = raw.parameters() if config.layer_decay == 1.0 else \
        layerwise_lr_groups(raw, config.lr, config.layer_decay)
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, betas=(config.beta1, config.beta2),
        eps=config.adam_eps, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_lambda(s, max(config.warmup_steps, 1), config.max_steps))
    scaler = torch.amp.GradScaler(device.type,
                                  enabled=config.precision == 'fp16')
    ema = ExponentialMovingAverage(raw, config.ema_decay) \
        if config.ema_decay else None

    step, epoch, position, skipped = 0, 0, 0, 0
    sharded = ShardedCheckpoints(
        out / 'checkpoints', config.keep_checkpoints, raw, optimizer,
        scheduler, scaler, ema) if config.fsdp else None
    resumed = resume_checkpoint(out / 'checkpoints') \
        if rank == 0 and sharded is None else None
    found = [resumed and resumed[0]]
    if world > 1:
        dist.broadcast_object_list(found, src=0)
    if found[0] is not None:
        state = resumed[1] if rank == 0 else read_checkpoint(found[0])
        if state['world_size'] != world:
            raise ValueError(f'{found[0]} was written by {state["world_size"]}'
                             f' ranks; resume with the same number')
        recipe.load(state)
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        scaler.load_state_dict(state['scaler'])
        if ema is not None:
            ema.shadow = {k: v.to(device) for k, v in state['ema'].items()}
        step, epoch, position, skipped = (state['step'], state['epoch'],
                                          state['position'],
                                          state['skipped'])
    restored = sharded.resume() if sharded is not None else None
    if restored is not None:
        step, epoch, position, skipped = (restored['step'], restored['epoch'],
                                          restored['position'],
                                          restored['skipped'])

    metrics_path = out / 'metrics.jsonl'
    writer = tb = bar = curves = None
    if rank == 0:
        truncate_metrics(metrics_path, step)
        writer = CheckpointWriter(out / 'checkpoints',
                                  keep=config.keep_checkpoints) \
            if sharded is None else None
        tb = SummaryWriter(str(out / 'tb'),
                           purge_step=step + 1 if step else None)
        bar = tqdm(total=config.max_steps, initial=step, unit='step',
                   disable=not config.progress, dynamic_ncols=True)
        curves = LearningCurves(metrics_path, out / 'learning_curves.png')

    def interval_end() -> bool:
        return step % config.log_every == 0 or step == config.max_steps

    def log(values: Dict[str, float], group: str) -> None:
        prefix = '' if group == 'train' else f'{group}_'
        record = dict(step=step, **{prefix + k: v for k, v in values.items()})
        with open(metrics_path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        if group != 'train' or interval_end():
            for key, value in values.items():
                tb.add_scalar(f'{group}/{key}', value, step)

    def checkpoint() -> None:
        if sharded is not None:
            sharded.save(step, epoch=epoch, position=position,
                         skipped=skipped, config=config.to_dict())
            return
        writer.save(step, recipe.state(
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
            ema=None if ema is None else ema.shadow,
            step=step, epoch=epoch, position=position, skipped=skipped,
            world_size=world, config=config.to_dict()))

    result: Dict[str, float] = {}
    stream = _micro_batches(recipe.sampler, recipe.loader, epoch, position)
    clock = DataWait()
    tick = time.perf_counter()
    while step < config.max_steps:
        clock.begin_step()
        batches = []
        for k in range(config.accumulation):
            epoch, position, item = next(stream)
            gen = torch.Generator().manual_seed(
                seed_of(config.seed, 1, rank, step, k))
            batches.append(recipe.prepare(item, gen))
        clock.data_ready()
        torch.manual_seed(seed_of(config.seed, 2, rank, step))
        lr = scheduler.get_last_lr()[0]
        metrics = recipe.step(model, optimizer, scaler, batches)
        scheduler.step()
        step += 1
        skipped += int(metrics['skipped'])
        if ema is not None and not metrics['skipped']:
            ema.update()
        clock.end_step()
        now = time.perf_counter()
        metrics.update(lr=lr, skipped_steps=float(skipped),
                       molecules_per_s=metrics['molecules'] / (now - tick))
        if interval_end():
            metrics['data_wait'] = clock.interval()
        tick = now
        result = dict(metrics)
        if rank == 0:
            log(metrics, 'train')
            bar.update(1)
            bar.set_postfix({k: f'{metrics[k]:.3g}' for k in recipe.progress},
                            refresh=False)
        last = step == config.max_steps
        valid = None
        if step % config.valid_every == 0 or last:
            with nullcontext() if ema is None else ema.average_parameters():
                valid = recipe.validate()
        if valid is not None:
            result.update({f'valid_{k}': v for k, v in valid.items()})
            if rank == 0:
                log(valid, 'valid')
                curves.write()
            tick = time.perf_counter()
        if (rank == 0 or sharded is not None) and (
                step % config.ckpt_every == 0 or last):
            checkpoint()
    if rank == 0:
        bar.close()
        tb.close()
        if writer is not None:
            writer.close()
        curves.write()
        if sharded is not None:
            consolidate(sharded.path(step), out / CONSOLIDATED)
    if world > 1:
        _leave_process_group()
    result['data_wait'] = clock.fraction
    return result


def _leave_process_group(timeout: float = 60.0) -> None:
    """Waits for every rank, then destroys the process group in a daemon
    thread for at most :obj:`timeout` seconds: a backend that hangs on
    teardown (pytorch/pytorch#75097) must not keep a finished run from
    exiting."""
    dist.barrier()
    thread = threading.Thread(target=dist.destroy_process_group,
                              daemon=True, name='destroy-process-group')
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        warnings.warn(f'destroying the process group took over {timeout:g} '
                      f's; exiting without waiting for it')
