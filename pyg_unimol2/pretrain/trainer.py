r"""The Uni-Mol2 pretraining loop, single-process or DDP under ``torchrun``.

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

Rank 0 alone writes checkpoints (:class:`~pyg_unimol2.checkpoints.CheckpointWriter`),
TensorBoard logs, ``metrics.jsonl`` (one line per step, one per validation)
and the progress bar.
"""
import json
import os
import threading
import time
import warnings
from pathlib import Path
from typing import (Callable, Dict, Iterator, List,
                    Optional, Tuple)

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from torch_geometric.data import Batch, Data
from tqdm import tqdm

from ..data.dense import DenseBatch, to_dense
from ..data.store import StoreError
from ..data.samplers import DynamicBatchSampler, ScaffoldTemperatureSampler
from ..datasets.hdf5 import HDF5MoleculeDataset
from ..models.unimol2 import UniMol2
from ..train.loop import (autocast, lr_lambda, optimizer_step, seed_of,
                          truncate_metrics)
from ..checkpoints import (CheckpointWriter, pretrain_state, read_checkpoint,
                           resume_checkpoint)
from .config import PretrainConfig
from .objectives import ObjectiveConfig, PretrainBatch, corrupt, pretrain_loss

__all__ = ['pretrain', 'train_step', 'validate', 'Collate', 'coords_2d',
           'TRAIN_METRICS']

#: Per-step metrics averaged over micro-batches and ranks.
TRAIN_METRICS = ('loss', 'atom', 'coord', 'dist', 'acc')


def coords_2d(smiles: str, num_atoms: int) -> Tensor:
    r"""RDKit 2D coordinates (``z = 0``) of the heavy atoms of
    :obj:`smiles`, laid out with hydrogens as in the official pipeline
    (``AddHs``, ``Compute2DCoords``, remove H), ``[n, 3]``.

    The store's atoms are those of ``Chem.MolFromSmiles(smiles)`` in order,
    so row ``i`` is atom ``i`` of the stored molecule.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() != num_atoms:
        raise ValueError(f'cannot lay out {smiles!r} with {num_atoms} atoms '
                         f'in 2D')
    mol = Chem.AddHs(mol)
    AllChem.Compute2DCoords(mol)
    pos = mol.GetConformer().GetPositions()[:num_atoms]
    return torch.from_numpy(pos).float()


class Collate:
    r"""DataLoader ``collate_fn``: molecules to a padded
    :class:`~pyg_unimol2.data.dense.DenseBatch` plus, if :obj:`with_2d`,
    their 2D coordinates ``[B, L, 3]`` (:func:`coords_2d`), else
    :obj:`None`. Molecules that the store skipped as damaged (:obj:`None`)
    are dropped; a batch left empty collates to :obj:`None`."""
    def __init__(self, with_2d: bool = False) -> None:
        self.with_2d = with_2d

    def __call__(self, items: List[Optional[Data]]
                 ) -> Optional[Tuple[DenseBatch, Optional[Tensor]]]:
        items = [data for data in items if data is not None]
        if not items:
            return None
        dense = to_dense(Batch.from_data_list(items))
        if not self.with_2d:
            return dense, None
        pos_2d = torch.zeros_like(dense.pos, dtype=torch.float32)
        for b, data in enumerate(items):
            pos_2d[b, :data.num_nodes] = coords_2d(data.smiles,
                                                   data.num_nodes)
        return dense, pos_2d


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, batches: List[PretrainBatch],
               objective: ObjectiveConfig, clip_norm: float,
               precision: str = 'fp32') -> Dict[str, float]:
    r"""One optimizer step over :obj:`batches` (this rank's micro-batches,
    on the model's device).

    Gradients of :math:`\frac{1}{K}\sum_k \mathcal{L}_k` over the ``K``
    micro-batches are accumulated (a DDP model synchronises on the last one
    only), unscaled, clipped to :obj:`clip_norm` and applied, unless the
    loss or the gradient norm is not finite on some rank: then every rank
    drops the gradients and skips the update.

    Returns:
        dict: :data:`TRAIN_METRICS` averaged over micro-batches and ranks,
        ``grad_norm`` (before clipping), ``molecules`` and
        ``padding`` (padded fraction of the pair elements) over all ranks,
        and ``skipped`` (``1.0`` if the update was skipped).
    """
    device = next(model.parameters()).device

    def loss_fn(model: torch.nn.Module, batch: PretrainBatch
                ) -> Tuple[Tensor, Dict[str, Tensor]]:
        with autocast(device, precision):
            out = model(batch.inputs, masked_tokens=batch.masked)
        terms = pretrain_loss(out, batch, objective)
        n = batch.inputs.atom_mask.sum(dim=1).double()
        logs = {m: terms[m].detach() for m in TRAIN_METRICS if m != 'loss'}
        logs.update(molecules=n.numel(), real_pairs=n.square().sum(),
                    padded_pairs=n.numel() * n.max() ** 2)
        return terms['loss'], logs

    sums = optimizer_step(model, optimizer, scaler, batches, loss_fn,
                          clip_norm)
    count = sums['micro_batches']
    metrics = {m: sums[m] / count for m in TRAIN_METRICS}
    metrics.update(grad_norm=sums['grad_norm'], molecules=sums['molecules'],
                   padding=1.0 - sums['real_pairs'] / sums['padded_pairs'],
                   skipped=sums['skipped'])
    return metrics


@torch.no_grad()
def validate(model: UniMol2, loader: DataLoader, objective: ObjectiveConfig,
             seed: int, precision: str = 'fp32') -> Dict[str, float]:
    r"""Validation loss terms, averaged over molecules of all ranks, with
    a fixed corruption (batch ``i`` of rank ``r``: seed ``(seed, 3, r,
    i)``), so that successive validations are comparable.

    Args:
        model (UniMol2): the bare (not DDP-wrapped) model.
        loader (DataLoader): this rank's validation batches
            (:class:`Collate` output).
        objective (ObjectiveConfig): the objective.
        seed (int): run seed.
        precision (str, optional): autocast precision.

    Returns:
        dict: :data:`TRAIN_METRICS` and ``molecules``.
    """
    model.eval()
    device = next(model.parameters()).device
    rank = dist.get_rank() if _is_dist() else 0
    sums = torch.zeros(len(TRAIN_METRICS) + 1, dtype=torch.float64)
    for i, item in enumerate(loader):
        if item is None:  # every molecule of the batch was damaged
            continue
        dense, pos_2d = item
        gen = torch.Generator().manual_seed(seed_of(seed, 3, rank, i))
        batch = corrupt(dense, objective, gen, pos_2d).to(device)
        with autocast(device, precision):
            out = model(batch.inputs, masked_tokens=batch.masked)
        terms = pretrain_loss(out, batch, objective)
        B = dense.token.shape[0]
        sums[:-1] += torch.stack([terms[m].double().cpu()
                                  for m in TRAIN_METRICS]) * B
        sums[-1] += B
    if _is_dist():
        reduced = sums.to(device)
        dist.all_reduce(reduced)
        sums = reduced.cpu()
    total = float(sums[-1])
    out = {m: float(v) / max(total, 1.0)
           for m, v in zip(TRAIN_METRICS, sums[:-1])}
    out['molecules'] = total
    return out


def _micro_batches(sampler: DynamicBatchSampler,
                   make_loader: Callable[[List[List[int]]], DataLoader],
                   epoch: int, start: int
                   ) -> Iterator[Tuple[int, int, Tuple]]:
    """Endless ``(epoch, next position, item)`` from position ``start`` of
    :obj:`epoch` on; batches whose molecules were all skipped as damaged are
    passed over (a whole epoch of them is an error)."""
    while True:
        sampler.set_epoch(epoch)
        batches = list(sampler)
        if not batches:
            raise ValueError('the sampler gives this rank no batches')
        readable = False
        for i, item in enumerate(make_loader(batches[start:]), start + 1):
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


def _data(config: PretrainConfig, rank: int, world: int
          ) -> Tuple[DynamicBatchSampler,
                     Callable[[List[List[int]]], DataLoader],
                     Optional[DataLoader]]:
    """This rank's training batch sampler, a loader factory for a list of
    its batches, and its validation loader (:obj:`None` if the validation
    split is empty)."""
    collate = Collate(with_2d=config.objective.use_2d_prob > 0)
    limits = dict(max_tokens=config.max_tokens or None,
                  max_pairs=config.max_pairs or None,
                  max_batch_size=config.max_batch_size or None)
    on_corrupt = 'raise' if config.strict else 'skip'
    train_set = HDF5MoleculeDataset(config.store, 'train',
                                    config.valid_fraction,
                                    on_corrupt=on_corrupt)
    valid_set = HDF5MoleculeDataset(config.store, 'valid',
                                    config.valid_fraction,
                                    on_corrupt=on_corrupt)
    inner = None
    if config.scaffold_tau:
        inner = ScaffoldTemperatureSampler(
            train_set.scaffold_id, tau=config.scaffold_tau, num_replicas=1,
            rank=0, seed=config.seed)
    sampler = DynamicBatchSampler(
        train_set.num_atoms, **limits, sampler=inner,
        bucket_size=config.bucket_size, num_replicas=world, rank=rank,
        seed=config.seed, drop_last=True)

    def make_loader(batches: List[List[int]]) -> DataLoader:
        return DataLoader(train_set, batch_sampler=batches,
                          collate_fn=collate, num_workers=config.num_workers)

    valid_loader = None
    if len(valid_set) > 0:
        valid_limits = dict(limits, max_tokens=config.valid_max_tokens or
                            limits['max_tokens'])
        valid_sampler = DynamicBatchSampler(
            valid_set.num_atoms, **valid_limits, shuffle=False,
            num_replicas=world, rank=rank, seed=config.seed)
        valid_loader = DataLoader(valid_set, batch_sampler=valid_sampler,
                                  collate_fn=collate,
                                  num_workers=config.num_workers)
    return sampler, make_loader, valid_loader


def pretrain(config: PretrainConfig) -> Dict[str, float]:
    r"""Pretrains a :class:`~pyg_unimol2.models.UniMol2` on the store
    :obj:`config.store` for :obj:`config.max_steps` steps, resuming from
    the newest checkpoint of ``OUT/checkpoints`` if there is one.

    Returns:
        dict: the last step's metrics (those of :func:`train_step`, plus
        ``lr``, ``skipped_steps`` so far and ``molecules_per_s``, all
        logged every step to ``metrics.jsonl`` and every
        :obj:`config.log_every` steps to TensorBoard under ``train/``), and
        the last validation metrics prefixed ``valid_`` (TensorBoard:
        ``valid/``), if the validation split is not empty.
    """
    rank, world, device = _setup(config)
    out = Path(config.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / 'config.json').write_text(json.dumps(config.to_dict(),
                                                    indent=2))
    objective = config.objective
    sampler, make_loader, valid_loader = _data(config, rank, world)

    torch.manual_seed(config.seed)
    raw = UniMol2.from_preset(config.preset).to(device)
    model = raw
    if world > 1:
        model = DistributedDataParallel(raw)
    # Weight decay on every parameter, as Uni-Core's Adam.
    optimizer = torch.optim.AdamW(
        raw.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
        eps=config.adam_eps, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_lambda(s, max(config.warmup_steps, 1), config.max_steps))
    scaler = torch.amp.GradScaler(device.type,
                                  enabled=config.precision == 'fp16')

    step, epoch, position, skipped = 0, 0, 0, 0
    resumed = resume_checkpoint(out / 'checkpoints') if rank == 0 else None
    found = [resumed and resumed[0]]
    if world > 1:
        dist.broadcast_object_list(found, src=0)
    if found[0] is not None:
        state = resumed[1] if rank == 0 else read_checkpoint(found[0])
        if state['world_size'] != world:
            raise ValueError(f'{found[0]} was written by {state["world_size"]}'
                             f' ranks; resume with the same number')
        raw.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        scaler.load_state_dict(state['scaler'])
        step, epoch, position, skipped = (state['step'], state['epoch'],
                                          state['position'],
                                          state['skipped'])

    metrics_path = out / 'metrics.jsonl'
    writer = tb = bar = None
    if rank == 0:
        truncate_metrics(metrics_path, step)
        writer = CheckpointWriter(out / 'checkpoints',
                                  keep=config.keep_checkpoints)
        tb = SummaryWriter(str(out / 'tb'),
                           purge_step=step + 1 if step else None)
        bar = tqdm(total=config.max_steps, initial=step, unit='step',
                   disable=not config.progress, dynamic_ncols=True)

    def log(values: Dict[str, float], group: str) -> None:
        prefix = '' if group == 'train' else f'{group}_'
        record = dict(step=step, **{prefix + k: v for k, v in values.items()})
        with open(metrics_path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        if group != 'train' or step % config.log_every == 0 or \
                step == config.max_steps:
            for key, value in values.items():
                tb.add_scalar(f'{group}/{key}', value, step)

    def checkpoint() -> None:
        writer.save(step, pretrain_state(
            raw, optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
            step=step, epoch=epoch, position=position, skipped=skipped,
            world_size=world, config=config.to_dict()))

    result: Dict[str, float] = {}
    stream = _micro_batches(sampler, make_loader, epoch, position)
    tick = time.perf_counter()
    while step < config.max_steps:
        batches = []
        for k in range(config.accumulation):
            epoch, position, (dense, pos_2d) = next(stream)
            gen = torch.Generator().manual_seed(
                seed_of(config.seed, 1, rank, step, k))
            batches.append(corrupt(dense, objective, gen, pos_2d).to(device))
        torch.manual_seed(seed_of(config.seed, 2, rank, step))
        lr = scheduler.get_last_lr()[0]
        metrics = train_step(model, optimizer, scaler, batches, objective,
                             config.clip_norm, config.precision)
        scheduler.step()
        step += 1
        skipped += int(metrics['skipped'])
        now = time.perf_counter()
        metrics.update(lr=lr, skipped_steps=float(skipped),
                       molecules_per_s=metrics['molecules'] / (now - tick))
        tick = now
        result = dict(metrics)
        if rank == 0:
            log(metrics, 'train')
            bar.update(1)
            bar.set_postfix(loss=f'{metrics["loss"]:.3f}',
                            acc=f'{metrics["acc"]:.2f}', refresh=False)
        last = step == config.max_steps
        if valid_loader is not None and (step % config.valid_every == 0 or
                                         last):
            valid = validate(raw, valid_loader, objective, config.seed,
                             config.precision)
            result.update({f'valid_{k}': v for k, v in valid.items()})
            if rank == 0:
                log(valid, 'valid')
            tick = time.perf_counter()
        if rank == 0 and (step % config.ckpt_every == 0 or last):
            checkpoint()
    if rank == 0:
        bar.close()
        tb.close()
        writer.close()
    if world > 1:
        _leave_process_group()
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
