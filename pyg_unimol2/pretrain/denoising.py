r"""Uni-Mol2's self-supervised pretraining recipe: masked atoms plus
coordinate and distance denoising (paper Sec. 3.3) on one molecule store.

:class:`DenoisingRecipe` is what :func:`~pyg_unimol2.pretrain.trainer.pretrain`
trains when the run names no energy/force domains: a
:class:`~pyg_unimol2.models.UniMol2` from a preset (or the checkpoint of
``init_from``, :func:`continued_model`), the store's training
split in atom-budget batches (optionally scaffold-temperature sampled), the
corruption of :func:`~pyg_unimol2.pretrain.objectives.corrupt` seeded per
step and micro-batch, and the loss of
:func:`~pyg_unimol2.pretrain.objectives.pretrain_loss`.
"""
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader
from torch_geometric.data import Batch, Data

from ..checkpoints import load_backbone, pretrain_state
from ..data.dense import DenseBatch, to_dense
from ..data.prefetch import EpochLoader, resolve_workers
from ..data.samplers import DynamicBatchSampler, ScaffoldTemperatureSampler
from ..datasets.hdf5 import HDF5MoleculeDataset
from ..models.unimol2 import UniMol2
from ..train.loop import autocast, optimizer_step, seed_of
from .config import PretrainConfig
from .objectives import ObjectiveConfig, PretrainBatch, corrupt, pretrain_loss

__all__ = ['DenoisingRecipe', 'train_step', 'validate', 'Collate',
           'coords_2d', 'TRAIN_METRICS']

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


def continued_model(source: str) -> UniMol2:
    """The model of a checkpoint (any format, e.g. ``hub:84M``) to go on
    pretraining: its architecture and weights, and its masked-atom head where
    it has one (fine-tuning checkpoints get a fresh head)."""
    loaded = load_backbone(source, heads=True)
    model = UniMol2(replace(loaded.config, lm_head=True))
    state = {k: v for k, v in loaded.state_dict().items()
             if not k.startswith('classification_heads.')}
    if loaded.lm_head is None:
        state.update({f'lm_head.{k}': v
                      for k, v in model.lm_head.state_dict().items()})
    model.load_state_dict(state)
    return model


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


def _data(config: PretrainConfig, rank: int, world: int
          ) -> Tuple[DynamicBatchSampler, EpochLoader, Optional[DataLoader]]:
    """This rank's training batch sampler, the loader of a list of its
    batches, and its validation loader (:obj:`None` if the validation
    split is empty). Training batches stay on the host: the main process
    corrupts them (seeded by step) before they go to the device."""
    collate = Collate(with_2d=config.objective.use_2d_prob > 0)
    workers = resolve_workers(config.num_workers)
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
    loader = EpochLoader(train_set, collate, workers, torch.device('cpu'))

    valid_loader = None
    if len(valid_set) > 0:
        valid_limits = dict(limits, max_tokens=config.valid_max_tokens or
                            limits['max_tokens'])
        valid_sampler = DynamicBatchSampler(
            valid_set.num_atoms, **valid_limits, shuffle=False,
            num_replicas=world, rank=rank, seed=config.seed)
        valid_loader = DataLoader(valid_set, batch_sampler=valid_sampler,
                                  collate_fn=collate, num_workers=workers)
    return sampler, loader, valid_loader


class DenoisingRecipe:
    r"""The self-supervised recipe for
    :func:`~pyg_unimol2.pretrain.trainer.pretrain` (see the module
    docstring): its model, this rank's batches, the preparation of a
    micro-batch, the optimizer step, validation and checkpoint state.

    Args:
        config (PretrainConfig): the run.
        rank (int): this process's rank.
        world (int): number of ranks.
        device (torch.device): this rank's device.
    """
    #: Metrics shown beside the progress bar.
    progress = ('loss', 'acc')
    #: Every parameter gets a gradient at every step.
    find_unused_parameters = False

    def __init__(self, config: PretrainConfig, rank: int, world: int,
                 device: torch.device) -> None:
        self.config, self.device = config, device
        self.sampler, self.loader, self.valid_loader = _data(
            config, rank, world)
        torch.manual_seed(config.seed)
        self.model = (UniMol2.from_preset(config.preset)
                      if config.init_from is None else
                      continued_model(config.init_from)).to(device)

    def prepare(self, item: Tuple[DenseBatch, Optional[Tensor]],
                generator: torch.Generator) -> PretrainBatch:
        """The corrupted micro-batch of a :class:`Collate` output."""
        dense, pos_2d = item
        return corrupt(dense, self.config.objective, generator,
                       pos_2d).to(self.device)

    def step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler,
             batches: List[PretrainBatch]) -> Dict[str, float]:
        """:func:`train_step`."""
        return train_step(model, optimizer, scaler, batches,
                          self.config.objective, self.config.clip_norm,
                          self.config.precision)

    def validate(self) -> Optional[Dict[str, float]]:
        """:func:`validate` on the validation split (:obj:`None` if it is
        empty)."""
        if self.valid_loader is None:
            return None
        return validate(self.model, self.valid_loader, self.config.objective,
                        self.config.seed, self.config.precision)

    def state(self, **training: Any) -> Dict[str, Any]:
        """A ``'pretrain'`` checkpoint of the model plus :obj:`training`."""
        return pretrain_state(self.model, **training)

    def load(self, state: Dict[str, Any]) -> None:
        """Restores the model of a checkpoint written by :meth:`state`."""
        self.model.load_state_dict(state['model'])
