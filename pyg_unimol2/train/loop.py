r"""The one training loop: fine-tuning, multi-task training, the baselines
and (through :func:`optimizer_step`) pretraining.

* :func:`lr_lambda`: linear warmup, then linear decay (the official
  polynomial schedule, power 1).
* :func:`optimizer_step`: one AdamW step over micro-batches (gradient
  accumulation, ``no_sync`` under DDP, fp16 loss scaling, clipping, a step
  whose loss or gradient is not finite on any rank is skipped by all).
* :func:`fit`: epochs of :func:`optimizer_step` with a wall-clock budget,
  EMA, validation after every epoch and best-validation selection,
  TensorBoard, ``metrics.jsonl``, ``learning_curves.png``
  (:class:`~pyg_unimol2.plots.LearningCurves`, redrawn after every
  validation), a progress bar, the data-wait fraction of every step
  (``data_wait``, :class:`~pyg_unimol2.train.data_wait.DataWait`; over the
  run at the end) and **exact resume**.

**Exact resume.** The batches of epoch ``e`` are a function of ``(seed,
e)`` (the batch source replays an epoch from any position), and the global
RNG (dropout) is reseeded with ``(seed, step)`` before every step, so no
random state needs saving. Checkpoints (``OUT/checkpoints/step_*.pt``,
written atomically in a background thread every :obj:`ckpt_every` steps
and after every epoch's validation) hold the model, optimizer, loss scaler
and EMA states, the step, epoch and position in the epoch, the best
validation score so far and the time spent. Rerunning the same command in
the same ``OUT`` continues from the newest one and repeats the per-step
losses and the final result of an uninterrupted run. (A wall-clock budget
makes the schedule depend on the clock; resume is then not exact.)
"""
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import (Any, Callable, ContextManager, Dict, Iterator, List,
                    Optional, Protocol, Sequence, Tuple)

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ..checkpoints import CheckpointWriter, resume_checkpoint
from ..plots import LearningCurves
from .data_wait import DataWait
from .ema import ExponentialMovingAverage

__all__ = ['lr_lambda', 'seed_of', 'autocast', 'optimizer_step', 'LoopConfig',
           'fit', 'BatchSource', 'truncate_metrics']

#: ``loss_fn(model, micro_batch) -> (loss, {name: value})``.
LossFn = Callable[[torch.nn.Module, Any], Tuple[Tensor, Dict[str, float]]]


def lr_lambda(step: float, warmup: int, total: int) -> float:
    """Linear warmup to 1, then linear decay to 0 (polynomial power 1)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def seed_of(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers."""
    state = np.random.SeedSequence(list(parts)).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def autocast(device: torch.device, precision: str) -> ContextManager:
    """``torch.autocast`` for ``'bf16'`` / ``'fp16'``; nothing for
    ``'fp32'``."""
    if precision == 'fp32':
        return nullcontext()
    if precision not in ('bf16', 'fp16'):
        raise ValueError(f"unknown precision {precision!r} (use fp32, bf16 "
                         f"or fp16)")
    dtype = torch.bfloat16 if precision == 'bf16' else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, micro_batches: Sequence[Any],
                   loss_fn: LossFn, clip_norm: float) -> Dict[str, float]:
    r"""One optimizer step over this rank's :obj:`micro_batches`.

    The gradients of :math:`\frac{1}{K}\sum_k \mathcal{L}_k` are
    accumulated (a DDP model synchronises on the last micro-batch only),
    unscaled, clipped to :obj:`clip_norm` and applied, unless the loss or
    the gradient norm is not finite on some rank: then every rank drops the
    gradients and skips the update.

    Returns:
        dict: every value :obj:`loss_fn` returned, **summed** over
        micro-batches and ranks (``loss`` included), ``micro_batches``
        (their number over all ranks), ``grad_norm`` (before clipping) and
        ``skipped`` (``1.0`` if the update was skipped).
    """
    model.train()
    device = next(model.parameters()).device
    K = len(micro_batches)
    sums: Dict[str, float] = {}
    for k, batch in enumerate(micro_batches):
        sync = k == K - 1 or not isinstance(model, DistributedDataParallel)
        with nullcontext() if sync else model.no_sync():
            loss, logs = loss_fn(model, batch)
            scaler.scale(loss / K).backward()
        for key, value in dict(logs, loss=float(loss.detach())).items():
            sums[key] = sums.get(key, 0.0) + float(value)
    keys = sorted(sums)
    values = torch.tensor([sums[k] for k in keys] + [K], dtype=torch.float64)
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    if _is_dist():
        reduced = values.to(device)
        dist.all_reduce(reduced)
        values = reduced.cpu()
    # Gradients are all-reduced, so the norm is the same on every rank.
    skip = not bool(torch.isfinite(values).all()) or \
        not bool(torch.isfinite(grad_norm))
    if skip:
        optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
    else:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    out = dict(zip(keys, values[:-1].tolist()))
    out.update(micro_batches=float(values[-1]), grad_norm=float(grad_norm),
               skipped=float(skip))
    return out


class BatchSource(Protocol):
    """Training batches that can replay any epoch from any position."""
    def __len__(self) -> int:
        """Micro-batches per epoch."""

    def iterate(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Micro-batches ``start, start + 1, ...`` of :obj:`epoch` (on the
        model's device)."""


@dataclass
class LoopConfig:
    r"""Settings of :func:`fit` (defaults: the official fine-tuning recipe).

    Args:
        epochs (int): epochs at most.
        max_steps (int, optional): stop after this many optimizer steps;
            the schedule then spans them. (default: :obj:`None`: epochs)
        lr (float): peak learning rate.
        weight_decay (float): AdamW weight decay.
        betas (Tuple[float, float]): AdamW betas.
        eps (float): AdamW epsilon.
        warmup_ratio (float): share of the steps in linear warmup.
        clip_norm (float): gradient-norm clipping.
        precision (str): ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        accumulation (int): micro-batches per optimizer step.
        ema_decay (float, optional): evaluate and select an exponential
            moving average of the weights.
        max_minutes (float, optional): wall-clock budget (validation
            included); the schedule follows steps or the clock, whichever is
            further along.
        ckpt_every (int, optional): resume checkpoint interval in steps
            (also after every epoch). (default: :obj:`None`: epochs only)
        seed (int): seed of the dropout RNG.
        out (str): run directory.
        progress (bool): progress bar.
    """
    epochs: int = 40
    max_steps: Optional[int] = None
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: Tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-6
    warmup_ratio: float = 0.06
    clip_norm: float = 1.0
    precision: str = 'fp32'
    accumulation: int = 1
    ema_decay: Optional[float] = None
    max_minutes: Optional[float] = None
    ckpt_every: Optional[int] = None
    seed: int = 0
    out: str = 'runs/finetune'
    progress: bool = True


def truncate_metrics(path: Path, step: int,
                     redo: Sequence[str] = ()) -> None:
    """Drops the lines of ``metrics.jsonl`` written after the checkpoint a
    run resumes from: those of later steps, and those of :obj:`step` whose
    ``group`` is in :obj:`redo` (work the resumed run repeats)."""
    if not path.exists():
        return
    records = [(line, json.loads(line)) for line in
               path.read_text().splitlines() if line]
    keep = [line for line, r in records if r['step'] < step or (
        r['step'] == step and r.get('group') not in redo)]
    path.write_text(''.join(line + '\n' for line in keep))


def _groups(stream: Iterator[Any], size: int) -> Iterator[List[Any]]:
    group = []
    for item in stream:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def fit(model: torch.nn.Module, source: BatchSource, loss_fn: LossFn,
        evaluate: Callable[[torch.nn.Module], Tuple[float, Dict[str, float]]],
        config: LoopConfig,
        on_best: Optional[Callable[[torch.nn.Module], None]] = None,
        state_extra: Optional[Callable[[], Dict[str, Any]]] = None
        ) -> Dict[str, Any]:
    r"""Trains :obj:`model` on :obj:`source` (see the module docstring).

    Args:
        model (torch.nn.Module): the model, on its device.
        source (BatchSource): training micro-batches.
        loss_fn (callable): ``(model, micro_batch) -> (loss, logs)``; logs
            are averaged per step and logged under ``train/``. It runs its
            forward pass under :func:`autocast` with ``config.precision``
            (the loop handles the fp16 loss scaling).
        evaluate (callable): ``model -> (score, metrics)`` on the
            validation data, lower score is better (NaN never wins);
            called after every epoch, with the EMA weights if any.
        config (LoopConfig): the settings.
        on_best (callable, optional): called with the model (EMA weights)
            whenever the score improves, e.g. to save ``best.pt``.
        state_extra (callable, optional): extra entries for the resume
            checkpoints (e.g. the model's checkpoint fields, so that they
            load like a fine-tuning checkpoint).

    Returns:
        dict: ``best_score``, ``best_epoch``, ``epochs_run``, ``steps``,
        ``seconds``, ``skipped_steps``, ``data_wait`` (the data-wait
        fraction of this process's steps) and ``history`` (validation
        metrics per epoch).
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  betas=tuple(config.betas), eps=config.eps,
                                  weight_decay=config.weight_decay)
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type,
                                  enabled=config.precision == 'fp16')
    ema = None if config.ema_decay is None else \
        ExponentialMovingAverage(model, config.ema_decay)
    K = max(1, config.accumulation)
    per_epoch = math.ceil(len(source) / K)
    total = config.max_steps or config.epochs * per_epoch
    warmup = max(1, int(config.warmup_ratio * total))
    loop = dict(step=0, epoch=1, position=0, best=math.inf, best_epoch=0,
                elapsed=0.0, skipped=0, history=[])

    found = resume_checkpoint(out / 'checkpoints')
    if found is not None:
        saved = found[1]
        before = {k: v for k, v in saved['train_state']['config'].items()
                  if k != 'progress'}
        now = {k: v for k, v in vars(config).items() if k != 'progress'}
        changed = sorted(k for k in now if before.get(k) != now[k])
        if changed:
            raise ValueError(
                f'{out} holds a run with other settings ({", ".join(changed)}'
                f'); resume with the same command, or use another output '
                f'directory')
        model.load_state_dict(saved['model'])
        optimizer.load_state_dict(saved['train_state']['optimizer'])
        scaler.load_state_dict(saved['train_state']['scaler'])
        if ema is not None:
            ema.shadow = {k: v.to(device) for k, v in
                          saved["train_state"]["ema"].items()}
        loop = saved['train_state']['loop']
        print(f'resuming from {found} (step {loop["step"]}, epoch '
              f'{loop["epoch"]})')
    metrics_path = out / 'metrics.jsonl'
    # A checkpoint inside an epoch is followed by that epoch's validation.
    truncate_metrics(metrics_path, loop['step'],
                     redo=('valid',) if loop['position'] else ())
    tb = SummaryWriter(str(out), purge_step=loop['step'] + 1
                       if loop['step'] else None)
    writer = CheckpointWriter(out / 'checkpoints', keep=2)
    curves = LearningCurves(metrics_path, out / 'learning_curves.png')
    bar = tqdm(total=total, initial=loop['step'], unit='step',
               disable=not config.progress, dynamic_ncols=True)
    budget = math.inf if config.max_minutes is None else \
        60 * config.max_minutes
    start = time.time() - loop['elapsed']

    def log(record: Dict[str, Any], group: str) -> None:
        with open(metrics_path, 'a') as f:
            f.write(json.dumps(dict(step=loop['step'], group=group,
                                    **record)) + '\n')
        for key, value in record.items():
            if isinstance(value, (int, float)):
                tb.add_scalar(f'{group}/{key}', value, loop['step'])

    def checkpoint() -> None:
        loop['elapsed'] = time.time() - start
        state = dict(state_extra() if state_extra else {},
                     model=model.state_dict())
        state['train_state'] = dict(
            optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
            ema=None if ema is None else ema.shadow, loop=dict(loop),
            config=dict(vars(config)))
        writer.save(loop['step'], state)

    clock = DataWait()
    stop = loop['step'] >= total
    while loop['epoch'] <= config.epochs and not stop:
        groups = _groups(source.iterate(loop['epoch'], loop['position']), K)
        while True:
            clock.begin_step()
            group = next(groups, None)
            if group is None:
                break
            clock.data_ready()
            step = loop['step']
            progress = max(step, total * (time.time() - start) / budget)
            lr = config.lr * lr_lambda(progress, warmup, total)
            for param_group in optimizer.param_groups:
                param_group['lr'] = lr
            torch.manual_seed(seed_of(config.seed, 2, step))
            sums = optimizer_step(model, optimizer, scaler, group, loss_fn,
                                  config.clip_norm)
            if ema is not None and not sums['skipped']:
                ema.update()
            clock.end_step()
            loop['step'] += 1
            loop['position'] += len(group)
            loop['skipped'] += int(sums['skipped'])
            count = sums.pop('micro_batches')
            record = {k: (v if k in ('grad_norm', 'skipped') else v / count)
                      for k, v in sums.items()}
            record.update(lr=lr, epoch=loop['epoch'],
                          data_wait=clock.interval())
            log(record, 'train')
            bar.update(1)
            bar.set_postfix(epoch=loop['epoch'], loss=f'{record["loss"]:.4f}',
                            refresh=False)
            if config.ckpt_every and loop['step'] % config.ckpt_every == 0:
                checkpoint()
            if loop['step'] >= total or time.time() - start > budget:
                stop = True
                break
        with nullcontext() if ema is None else ema.average_parameters():
            score, metrics = evaluate(model)
            log(dict(metrics, score=score, epoch=loop['epoch']), 'valid')
            curves.write()
            loop['history'].append(dict(epoch=loop['epoch'], score=score,
                                        **metrics))
            if loop['best_epoch'] == 0 or score < loop['best']:
                loop['best'], loop['best_epoch'] = score, loop['epoch']
                if on_best is not None:
                    on_best(model)
        bar.write(f'epoch {loop["epoch"]}: validation score {score:.5f} '
                  f'(best {loop["best"]:.5f}, epoch {loop["best_epoch"]})')
        if time.time() - start > budget:
            bar.write(f'stopping in epoch {loop["epoch"]}: the '
                      f'{config.max_minutes:g}-minute budget is spent')
        loop['epoch'] += 1
        loop['position'] = 0
        checkpoint()
    bar.close()
    writer.close()
    tb.close()
    curves.write()
    print(f'data wait: {clock.fraction:.1%} of the training step time '
          f'({clock.total_wait:.1f} of {clock.total_wall:.1f} s)')
    return dict(best_score=loop['best'], best_epoch=loop['best_epoch'],
                epochs_run=loop['epoch'] - 1, steps=loop['step'],
                seconds=time.time() - start, skipped_steps=loop['skipped'],
                data_wait=clock.fraction, history=loop['history'])
