r"""Joint multi-domain pretraining on energies and forces (JMP,
`arXiv:2310.16802 <https://arxiv.org/abs/2310.16802>`_) with the Uni-Mol2
backbone.

:class:`EnergyForceRecipe` is what :func:`~pyg_unimol2.pretrain.trainer.pretrain`
trains when the run names energy/force :obj:`domains`: one backbone, one
energy head and one force head per domain, each domain a store of structures
with energies and forces (``unimol2 build-hdf5 --format ...``). Every
micro-batch holds structures of one domain, drawn with temperature sampling
over the domains (:class:`~pyg_unimol2.data.samplers.DatasetMixSampler`,
:math:`T = 2` as in JMP); its loss is

.. math::
    \mathcal{L} = w_d \left(\lambda_E\, \mathcal{L}_E +
    \lambda_F\, \mathcal{L}_F\right)

on energies and forces normalised per domain (per-element linear reference
energies fitted on the domain's training split, then energy and force
scales), with the domain's weight :math:`w_d` and coefficients. The loop's
guarantees (DDP, mixed precision, accumulation, asynchronous checkpoints,
exact resume) are those of every recipe.
"""
import copy
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch.distributed as dist

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Batch, Data

from ..checkpoints import (load_backbone, load_energy_force_model,
                           pretrain_state)
from ..data.dense import DenseBatch, to_dense
from ..data.prefetch import EpochLoader, resolve_workers
from ..data.samplers import DatasetMixSampler, DynamicBatchSampler
from ..datasets.hdf5 import HDF5MoleculeDataset
from ..errors import ConfigError
from ..models.energy_force import EnergyForceModel
from ..tasks.energy_force import energy_force_loss
from ..tasks.energy_stats import EnergyForceStats, fit_energy_force_stats
from ..train.loop import autocast, optimizer_step
from .config import PretrainConfig

__all__ = ['Domain', 'EnergyForceBatch', 'EnergyForceRecipe']

FORCE_MODES = ('direct', 'conservative')


@dataclass
class Domain:
    r"""One energy/force dataset of a joint pretraining run.

    Args:
        name (str): the domain's name (its heads are ``name``'s).
        store (str): its store directory, with energies and forces.
        force (str): ``'direct'`` (an equivariant head) or
            ``'conservative'`` (:math:`-\partial E / \partial r`).
        energy_weight (float): :math:`\lambda_E`.
        force_weight (float): :math:`\lambda_F`.
        weight (float): :math:`w_d`, the domain's share of the loss.
        force_loss (str): ``'l2'`` (mean norm of the per-atom force errors,
            JMP) or ``'mae'`` (per component).
        valid_store (str, optional): a store of held-out structures for
            validation; without it the validation split is carved from
            :obj:`store` (by formula for structures without a graph).
    """
    name: str
    store: str
    force: str = 'direct'
    energy_weight: float = 1.0
    force_weight: float = 10.0
    weight: float = 1.0
    force_loss: str = 'l2'
    valid_store: Optional[str] = None

    def __post_init__(self) -> None:
        if self.force not in FORCE_MODES:
            raise ConfigError(f"domain {self.name!r}: force must be one of "
                              f"{FORCE_MODES}, got {self.force!r}")
        if self.force_loss not in ('l2', 'mae'):
            raise ConfigError(f"domain {self.name!r}: force_loss must be "
                              f"'l2' or 'mae', got {self.force_loss!r}")


def domains_of(config: PretrainConfig) -> List[Domain]:
    """The :class:`Domain` s of :obj:`config`, with clear errors for
    unknown keys and repeated names."""
    known = set(Domain.__dataclass_fields__)
    domains = []
    for i, table in enumerate(config.domains):
        unknown = set(table) - known
        if unknown or 'name' not in table or 'store' not in table:
            raise ConfigError(f'domain {i + 1}: needs name and store; unknown'
                              f' keys {sorted(unknown)} (known: '
                              f'{", ".join(sorted(known))})')
        domains.append(Domain(**table))
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise ConfigError(f'domain names repeat: {names}')
    return domains


@dataclass
class EnergyForceBatch:
    """A micro-batch of one domain on its device."""
    domain: int  #: index of the domain
    inputs: DenseBatch  #: padded inputs ``[B, L, ...]``
    energy: Tensor  #: energies ``[B]`` (eV, NaN if unknown)
    forces: Tensor  #: forces ``[B, L, 3]`` (eV/Angstrom, 0 at padding)

    def to(self, device: torch.device) -> 'EnergyForceBatch':
        return EnergyForceBatch(self.domain, self.inputs.to(device),
                                self.energy.to(device),
                                self.forces.to(device))


class _Domains(Dataset):
    """The structures of several datasets, indexed by ``(domain, index)``."""
    def __init__(self, datasets: Sequence[HDF5MoleculeDataset]) -> None:
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: Tuple[int, int]) -> Tuple[int, Optional[Data]]:
        domain, index = key
        return domain, self.datasets[domain][index]


def collate(items: List[Tuple[int, Optional[Data]]]
            ) -> Optional[EnergyForceBatch]:
    """Structures of one domain to an :class:`EnergyForceBatch`; damaged
    ones (:obj:`None`) are dropped, an empty batch is :obj:`None`."""
    domain = items[0][0]
    data = [d for _, d in items if d is not None]
    if not data:
        return None
    batch = Batch.from_data_list(data)
    inputs = to_dense(batch)
    forces = inputs.pos.new_zeros(inputs.pos.shape)
    forces[inputs.atom_mask] = batch.forces.to(forces.dtype)
    return EnergyForceBatch(domain, inputs, batch.energy.view(-1), forces)


class _MixedBatches:
    """This rank's batches of a :class:`DatasetMixSampler` as lists of
    ``(domain, index)`` keys of :class:`_Domains`."""
    def __init__(self, mix: DatasetMixSampler) -> None:
        self.mix = mix

    def set_epoch(self, epoch: int) -> None:
        self.mix.set_epoch(epoch)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        for domain, indices in self.mix.plan():
            yield [(domain, i) for i in indices]


def _limits(config: PretrainConfig) -> Dict[str, Optional[int]]:
    return dict(max_tokens=config.max_tokens or None,
                max_pairs=config.max_pairs or None,
                max_batch_size=config.max_batch_size or None)


def domain_data(config: PretrainConfig, domains: Sequence[Domain], rank: int,
                world: int, device: torch.device):
    """This rank's mixed training batches, the loader of a list of them
    (delivering on :obj:`device`), the training datasets and the validation
    loader of every domain (:obj:`None` for an empty split)."""
    on_corrupt = 'raise' if config.strict else 'skip'
    workers = resolve_workers(config.num_workers)

    def split(domain: Domain, which: str) -> HDF5MoleculeDataset:
        if domain.valid_store is None:
            return HDF5MoleculeDataset(domain.store, which,
                                       config.valid_fraction,
                                       on_corrupt=on_corrupt)
        store = domain.store if which == 'train' else domain.valid_store
        return HDF5MoleculeDataset(store, on_corrupt=on_corrupt)

    train = [split(d, 'train') for d in domains]
    valid = [split(d, 'valid') for d in domains]
    samplers = [DynamicBatchSampler(
        t.num_atoms, **_limits(config), bucket_size=config.bucket_size,
        num_replicas=world, rank=rank, seed=config.seed + k, drop_last=True)
        for k, t in enumerate(train)]
    mix = DatasetMixSampler(samplers, [len(t) for t in train],
                            mode=config.mix, temperature=config.temperature,
                            seed=config.seed)
    loader = EpochLoader(_Domains(train), collate, workers, device)

    valid_loaders = []
    for k, v in enumerate(valid):
        if len(v) == 0:
            valid_loaders.append(None)
            continue
        sampler = DynamicBatchSampler(
            v.num_atoms, **dict(_limits(config),
                                max_tokens=config.valid_max_tokens or
                                config.max_tokens or None),
            shuffle=False, num_replicas=world, rank=rank, seed=config.seed)
        keys = [[(k, i) for i in b] for b in sampler]
        valid_loaders.append(DataLoader(_Domains(valid), batch_sampler=keys,
                                        collate_fn=collate,
                                        num_workers=workers))
    return _MixedBatches(mix), loader, train, valid_loaders


def domain_statistics(dataset: HDF5MoleculeDataset) -> EnergyForceStats:
    """Reference energies and scales of a domain's training split
    (:func:`~pyg_unimol2.tasks.energy_stats.fit_energy_force_stats`)."""
    z, energies, forces = [], [], []
    for i in range(len(dataset)):
        data = dataset[i]
        if data is None:  # damaged and skipped
            continue
        z.append(data.z)
        energies.append(float(data.energy))
        forces.append(data.forces)
    return fit_energy_force_stats(z, torch.tensor(energies,
                                                  dtype=torch.float64),
                                  forces)


def _initial_model(config: PretrainConfig,
                   domains: Sequence[Domain]) -> EnergyForceModel:
    """A fresh model, or the backbone of :obj:`config.init_from` with
    fresh heads, or heads kept from its domains (:obj:`config.keep_heads`)."""
    unknown = set(config.keep_heads) - {d.name for d in domains}
    if unknown:
        raise ConfigError(f'keep_heads names no domain of this run: '
                          f'{sorted(unknown)}')
    if config.init_from is None:
        if config.keep_heads:
            raise ConfigError('keep_heads needs init_from (the checkpoint '
                              'whose heads to keep)')
        return EnergyForceModel.from_preset(
            config.preset, {d.name: d.force for d in domains})
    if config.keep_heads:
        source = load_energy_force_model(config.init_from)
    else:
        source = EnergyForceModel(load_backbone(config.init_from))
    heads: Dict[str, Any] = {}
    for domain in domains:
        kept = config.keep_heads.get(domain.name)
        if kept is None:
            heads[domain.name] = domain.force
            continue
        if kept not in source.datasets:
            raise ConfigError(f'keep_heads: {config.init_from} has no domain '
                              f'{kept!r} (it has {source.datasets})')
        heads[domain.name] = copy.deepcopy(source.dataset_heads(kept))
        if heads[domain.name].force_mode != domain.force:
            raise ConfigError(f'domain {domain.name!r} keeps the heads of '
                              f'{kept!r}, whose forces are '
                              f'{heads[domain.name].force_mode!r}, not '
                              f'{domain.force!r}')
    return EnergyForceModel(source.backbone, heads)


#: Per-step metrics: the weighted loss, energy MAE (eV) and force MAE
#: (eV/Angstrom, per component), averaged over micro-batches and ranks.
METRICS = ('loss', 'energy_mae', 'force_mae')


class EnergyForceRecipe:
    r"""The JMP recipe for :func:`~pyg_unimol2.pretrain.trainer.pretrain`
    (see the module docstring).

    Args:
        config (PretrainConfig): the run, with :obj:`domains`.
        rank (int): this process's rank.
        world (int): number of ranks.
        device (torch.device): this rank's device.
    """
    progress = METRICS
    #: A step trains the heads of one domain only.
    find_unused_parameters = True

    def __init__(self, config: PretrainConfig, rank: int, world: int,
                 device: torch.device) -> None:
        self.config, self.device = config, device
        self.domains = domains_of(config)
        self.sampler, self.loader, train, self.valid_loaders = \
            domain_data(config, self.domains, rank, world, device)
        torch.manual_seed(config.seed)
        self.model = _initial_model(config, self.domains).to(device)
        for domain, dataset in zip(self.domains, train):
            if domain.name not in config.keep_heads:  # kept: as pretrained
                self.model.dataset_heads(domain.name).set_statistics(
                    domain_statistics(dataset))

    def prepare(self, item: EnergyForceBatch,
                generator: torch.Generator) -> EnergyForceBatch:
        """The micro-batch, already on the device (no randomness)."""
        return item

    def _terms(self, model: torch.nn.Module, batch: EnergyForceBatch
               ) -> Tuple[Tensor, Dict[str, Tensor]]:
        domain = self.domains[batch.domain]
        with autocast(self.device, self.config.precision):
            energy, forces = model(batch.inputs, domain.name)
        normalize = self.model.normalize
        mask = batch.inputs.atom_mask.bool()
        pred = normalize(domain.name, batch.inputs, energy, forces.double())
        true = normalize(domain.name, batch.inputs, batch.energy,
                         batch.forces.double())
        terms = energy_force_loss(*pred, *true, mask,
                                  energy_weight=domain.energy_weight,
                                  force_weight=domain.force_weight,
                                  force_loss=domain.force_loss)
        error = (forces.double() - batch.forces.double())[mask]
        logs = dict(energy_mae=(energy - batch.energy).abs().mean().detach(),
                    force_mae=error.abs().mean().detach(),
                    molecules=energy.numel())
        return domain.weight * terms['loss'], logs

    def step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler,
             batches: List[EnergyForceBatch]) -> Dict[str, float]:
        """One optimizer step (:func:`~pyg_unimol2.train.loop.optimizer_step`)
        with the metrics :data:`METRICS`, ``grad_norm``, ``molecules`` and
        ``skipped``."""
        sums = optimizer_step(model, optimizer, scaler, batches, self._terms,
                              self.config.clip_norm)
        count = sums['micro_batches']
        metrics = {m: sums[m] / count for m in METRICS}
        metrics.update(grad_norm=sums['grad_norm'],
                       molecules=sums['molecules'], skipped=sums['skipped'])
        return metrics

    def validate(self) -> Optional[Dict[str, float]]:
        r"""Per domain, the weighted loss, energy MAE (eV) and force MAE
        (eV/Angstrom) over its validation split (all ranks), plus their
        sum over domains as ``loss``; :obj:`None` if every validation split
        is empty."""
        if all(loader is None for loader in self.valid_loaders):
            return None
        self.model.eval()
        # Per domain: loss * B, sum |energy error|, sum |force error|,
        # molecules, force components.
        sums = torch.zeros(len(self.domains), 5, dtype=torch.float64)
        for k, loader in enumerate(self.valid_loaders):
            for item in loader or ():
                if item is None:
                    continue
                batch = item.to(self.device)
                with torch.no_grad():
                    loss, logs = self._terms(self.model, batch)
                B = batch.energy.numel()
                components = 3 * int(batch.inputs.atom_mask.sum())
                sums[k] += torch.tensor([
                    float(loss) * B, float(logs['energy_mae']) * B,
                    float(logs['force_mae']) * components, B, components],
                    dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            reduced = sums.to(self.device)
            dist.all_reduce(reduced)
            sums = reduced.cpu()
        out: Dict[str, float] = {}
        for k, domain in enumerate(self.domains):
            n, c = max(float(sums[k, 3]), 1.0), max(float(sums[k, 4]), 1.0)
            out[f'{domain.name}_loss'] = float(sums[k, 0]) / n
            out[f'{domain.name}_energy_mae'] = float(sums[k, 1]) / n
            out[f'{domain.name}_force_mae'] = float(sums[k, 2]) / c
        out['loss'] = sum(out[f'{d.name}_loss'] for d in self.domains)
        return out

    def state(self, **training: Any) -> Dict[str, Any]:
        """A ``'pretrain'`` checkpoint: the backbone (so every consumer of
        pretraining checkpoints reads it) plus the heads, their statistics
        and force modes, and :obj:`training`."""
        return pretrain_state(self.model.backbone,
                              energy_force=dict(
                                  heads=self.model.heads.state_dict(),
                                  force_modes=self.model.force_modes),
                              **training)

    def load(self, state: Dict[str, Any]) -> None:
        """Restores backbone and heads of a checkpoint of :meth:`state`."""
        self.model.backbone.load_state_dict(state['model'])
        self.model.heads.load_state_dict(state['energy_force']['heads'])
