r"""Uni-Mol2 with per-dataset energy and force heads (JMP: joint
multi-domain pretraining on energies and forces, `"From Molecules to
Materials: Pre-training Large Generalizable Models for Atomic Property
Prediction" <https://arxiv.org/abs/2310.16802>`_).

One backbone, one :class:`EnergyForceHeads` per dataset: an
:class:`~pyg_unimol2.nn.EnergyHead`, forces either direct
(:class:`~pyg_unimol2.nn.DirectForceHead`) or conservative
(:func:`~pyg_unimol2.nn.conservative_forces`), and the dataset's label
statistics (:mod:`pyg_unimol2.tasks.energy_stats`). With head outputs
:math:`\epsilon_i` (per atom) and :math:`\mathbf{f}_i`, the predictions
in eV and eV/Angstrom are

.. math::
    E = \sum_i \left(r_{Z_i} + \sigma_E\,\epsilon_i\right), \qquad
    \mathbf{F}_i = \sigma_F\,\mathbf{f}_i \;\text{(direct)} \quad
    \text{or} \quad \mathbf{F}_i = -\frac{\partial E}{\partial
    \mathbf{r}_i} \;\text{(conservative)},

and the loss (:func:`~pyg_unimol2.tasks.energy_force_loss`) compares
:meth:`EnergyForceModel.normalize` d predictions with
:meth:`EnergyForceModel.normalized_targets`. Fine-tuning either adds
fresh heads (:meth:`EnergyForceModel.add_dataset`) or starts from the
heads of the closest pretraining dataset
(:meth:`EnergyForceModel.copy_dataset`).

The statistics are float64 buffers (``heads.<dataset>.reference``
``[119]``, ``energy_scale``, ``force_scale``) saved in the
``state_dict``; they stay float64 under ``.float()`` / ``.half()`` (only
their device follows). A model is rebuilt from its backbone config and
:attr:`EnergyForceModel.force_modes` before loading a ``state_dict``.
"""
import copy
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_batch

from ..data.dense import DenseBatch, to_dense
from ..nn import DirectForceHead, EnergyHead, conservative_forces
from ..tasks.energy_stats import NUM_ELEMENTS, EnergyForceStats
from .multitask import module_key
from .unimol2 import UniMol2

__all__ = ['FORCE_MODES', 'EnergyForceHeads', 'EnergyForceModel']

#: How forces are predicted: by a head, or as :math:`-\nabla E`.
FORCE_MODES = ('direct', 'conservative')

_STATS = ('reference', 'energy_scale', 'force_scale')


def _as_batch(batch: Union[Batch, Data]) -> Batch:
    return batch if isinstance(batch, Batch) else \
        Batch.from_data_list([batch])


class EnergyForceHeads(nn.Module):
    r"""The heads and label statistics of one dataset (see the module
    docstring for the equations).

    Args:
        embed_dim (int): atom size :math:`E`.
        pair_dim (int): pair size :math:`P`.
        num_heads (int): attention heads :math:`H` of the direct force head.
        force (str, optional): ``'direct'`` or ``'conservative'``.
            (default: :obj:`'direct'`)

    Buffers (float64): ``reference`` ``[119]`` (eV per atom of element
    :math:`Z`), ``energy_scale`` :math:`\sigma_E` (eV, RMS of the residual
    energy per molecule), ``force_scale`` :math:`\sigma_F` (eV/Angstrom,
    RMS of the force components); initially ``0``, ``1``, ``1``. Direct
    forces are :math:`\sigma_F` times the head output; conservative ones
    are :math:`-\nabla E` (so :math:`\sigma_E` sets their scale and
    :math:`\sigma_F` only normalises them for the loss).
    """
    def __init__(self, embed_dim: int, pair_dim: int, num_heads: int,
                 force: str = 'direct'):
        super().__init__()
        if force not in FORCE_MODES:
            raise ValueError(f"force must be one of {FORCE_MODES} "
                             f"(got {force!r})")
        self.force_mode = force
        self.energy = EnergyHead(embed_dim)
        self.force = (DirectForceHead(embed_dim, pair_dim, num_heads)
                      if force == 'direct' else None)
        f64 = torch.float64
        self.register_buffer('reference', torch.zeros(NUM_ELEMENTS,
                                                      dtype=f64))
        self.register_buffer('energy_scale', torch.ones((), dtype=f64))
        self.register_buffer('force_scale', torch.ones((), dtype=f64))

    def reset_parameters(self) -> None:
        r"""Resets the heads; the statistics are kept."""
        self.energy.reset_parameters()
        if self.force is not None:
            self.force.reset_parameters()

    def _apply(self, fn, recurse=True):
        # The statistics only follow device moves: a float32 reference of
        # a -1e4 eV molecule would be off by meV.
        stats = {name: self._buffers[name] for name in _STATS}
        super()._apply(fn, recurse)
        for name, value in stats.items():
            self._buffers[name] = value.to(fn(value).device)
        return self

    @torch.no_grad()
    def set_statistics(self, stats: EnergyForceStats) -> None:
        r"""Stores fitted statistics, e.g. of
        :func:`~pyg_unimol2.tasks.fit_energy_force_stats` on the
        training set."""
        self.reference.copy_(torch.as_tensor(stats.reference))
        self.energy_scale.fill_(max(float(stats.energy_scale), 1e-12))
        self.force_scale.fill_(max(float(stats.force_scale), 1e-12))

    def atom_reference(self, batch: DenseBatch) -> Tensor:
        r"""The reference energy :math:`r_{Z_i}` of each atom, ``[B, L]``
        (float64, eV; zero for padding)."""
        ref = self.reference[batch.token]
        return ref.masked_fill(~batch.atom_mask.bool(), 0.0)

    def reference_energy(self, batch: Union[Batch, Data, DenseBatch]
                         ) -> Tensor:
        r"""The reference energy :math:`\sum_i r_{Z_i}` of each molecule,
        ``[B]`` (float64, eV)."""
        if isinstance(batch, DenseBatch):
            return self.atom_reference(batch).sum(dim=1)
        batch = _as_batch(batch)
        out = self.reference.new_zeros(batch.num_graphs)
        return out.index_add(0, batch.batch, self.reference[batch.z])

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(force={self.force_mode!r}, '
                f'energy_scale={float(self.energy_scale):.4g}, '
                f'force_scale={float(self.force_scale):.4g})')


class EnergyForceModel(nn.Module):
    r"""A :class:`~pyg_unimol2.models.UniMol2` backbone with per-dataset
    energy/force heads and label statistics (module docstring).

    Args:
        backbone (UniMol2): the encoder (differentiable w.r.t. the
            coordinates through its distance kernel).
        heads (Mapping[str, str or EnergyForceHeads], optional): per
            dataset, a force mode (``'direct'`` / ``'conservative'``: fresh
            heads) or a head set. (default: :obj:`None`)
    """
    def __init__(self, backbone: UniMol2,
                 heads: Optional[Mapping[str, Union[str,
                                                    EnergyForceHeads]]] = None
                 ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict()
        self._datasets: List[str] = []
        for name, head in (heads or {}).items():
            if isinstance(head, str):
                self.add_dataset(name, head)
            else:
                self._register(name, head)

    @classmethod
    def from_preset(cls, preset: str,
                    heads: Optional[Mapping[str, str]] = None,
                    distance_scale: float = 1.0, **overrides: Any
                    ) -> 'EnergyForceModel':
        r"""A fresh model: a :meth:`UniMol2.from_preset` backbone (no
        masked-atom head) with fresh heads per dataset. Its distance kernel
        starts at :math:`y_{ij} = s\,d_{ij}` (:obj:`distance_scale`, see
        :meth:`~pyg_unimol2.nn.GaussianKernel.reset_parameters`) instead of
        the official BERT init, under which forces are barely learnt: on 32
        ANI-1x-like GFN2-xTB structures, 100 AdamW steps took the training
        force MAE from 1.37 to 0.70 eV/Angstrom with :math:`s = 1` and to
        1.36 with the BERT init.

        Args:
            preset (str): backbone size (:data:`~pyg_unimol2.models.PRESETS`).
            heads (Mapping[str, str], optional): force mode per dataset.
                (default: :obj:`None`)
            distance_scale (float, optional): :math:`s`. (default: :obj:`1.0`)
            **overrides: :class:`~pyg_unimol2.models.UniMol2Config` fields.
        """
        backbone = UniMol2.from_preset(preset, lm_head=False, **overrides)
        backbone.se3_invariant_kernel.reset_parameters(distance_scale)
        return cls(backbone, heads)

    def _register(self, name: str, head: EnergyForceHeads
                  ) -> EnergyForceHeads:
        if name in self._datasets:
            raise ValueError(f'dataset {name!r} already has heads')
        weight = self.backbone.embed_tokens.weight
        head = head.to(device=weight.device, dtype=weight.dtype)
        self.heads[module_key(name)] = head
        self._datasets.append(name)
        return head

    def add_dataset(self, name: str, force: str = 'direct'
                    ) -> EnergyForceHeads:
        r"""Adds fresh heads (statistics ``0, 1, 1``: set them with
        :meth:`EnergyForceHeads.set_statistics`) and returns them."""
        c = self.backbone.config
        return self._register(name, EnergyForceHeads(
            c.embed_dim, c.pair_dim, c.num_heads, force))

    def copy_dataset(self, source: str, name: str) -> EnergyForceHeads:
        r"""Adds heads under :obj:`name` that copy those of :obj:`source`
        (weights, force mode and statistics), e.g. to fine-tune from the
        closest pretraining dataset; returns them."""
        return self._register(name,
                              copy.deepcopy(self.dataset_heads(source)))

    def remove_dataset(self, name: str) -> None:
        r"""Drops the heads of :obj:`name` (e.g. the pretraining heads
        before fine-tuning)."""
        self.dataset_heads(name)
        del self.heads[module_key(name)]
        self._datasets.remove(name)

    def dataset_heads(self, name: str) -> EnergyForceHeads:
        if name not in self._datasets:
            raise KeyError(f'no dataset {name!r} in the model (has '
                           f'{self._datasets})')
        return self.heads[module_key(name)]

    @property
    def datasets(self) -> List[str]:
        return list(self._datasets)

    @property
    def force_modes(self) -> Dict[str, str]:
        r"""``{dataset: force mode}``: with the backbone config, what
        rebuilds the model before loading a ``state_dict``."""
        return {d: self.dataset_heads(d).force_mode for d in self._datasets}

    def reset_parameters(self) -> None:
        r"""Resets the backbone and the heads (statistics are kept)."""
        self.backbone.reset_parameters()
        for head in self.heads.values():
            head.reset_parameters()

    def forward(self, batch: Union[Batch, Data, DenseBatch], dataset: str,
                return_atom_energy: bool = False
                ) -> Union[Tuple[Tensor, Tensor],
                           Tuple[Tensor, Tensor, Tensor]]:
        r"""
        Args:
            batch (Batch or DenseBatch): molecules (``pos`` in Angstrom).
            dataset (str): whose heads and statistics to use.
            return_atom_energy (bool, optional): also return the per-atom
                energies. (default: :obj:`False`)

        Returns:
            energies ``[B]`` (float64, eV), forces ``[B, L, 3]``
            (eV/Angstrom, zero for padding) and, if requested, per-atom
            energies ``[B, L]`` (float64, eV, summing to the energies).

        Conservative forces are computed with grad enabled even under
        :func:`torch.no_grad` (the outputs are then detached); the graph
        of the gradient is kept (``create_graph``) whenever grad is
        enabled, so that a force loss trains the model.
        """
        heads = self.dataset_heads(dataset)
        if not isinstance(batch, DenseBatch):
            batch = to_dense(batch)
        grad = torch.is_grad_enabled()
        conservative = heads.force_mode == 'conservative'
        with torch.set_grad_enabled(grad or conservative):
            pos = batch.pos
            if conservative and not pos.requires_grad:
                pos = pos.detach().requires_grad_()
                batch = replace(batch, pos=pos)
            out = self.backbone(batch, compute_pos=False)
            energy, atom_energy = heads.energy(out.atoms, out.atom_mask)
            if conservative:
                forces = conservative_forces(energy, pos, create_graph=grad)
                forces = forces * heads.energy_scale.to(forces.dtype)
            else:
                delta = pos.unsqueeze(1) - pos.unsqueeze(2)
                forces = heads.force(out.atoms, out.pair, delta,
                                     out.atom_mask)
                forces = forces * heads.force_scale.to(forces.dtype)
        atom_energy = (heads.atom_reference(batch)
                       + heads.energy_scale * atom_energy)
        energy = atom_energy.sum(dim=1)
        outputs = (energy, forces, atom_energy) if return_atom_energy \
            else (energy, forces)
        if not grad:
            outputs = tuple(t.detach() for t in outputs)
        return outputs

    def normalize(self, dataset: str, batch: Union[Batch, Data, DenseBatch],
                  energy: Tensor, forces: Tensor) -> Tuple[Tensor, Tensor]:
        r"""Energies ``[B]`` and forces ``[B, L, 3]`` in eV, eV/Angstrom
        (predictions or labels) as the loss sees them:
        :math:`(E - \sum_i r_{Z_i}) / \sigma_E` and
        :math:`\mathbf{F} / \sigma_F`."""
        heads = self.dataset_heads(dataset)
        energy = (energy - heads.reference_energy(batch)) / heads.energy_scale
        return energy, forces / heads.force_scale.to(forces.dtype)

    def normalized_targets(self, dataset: str, batch: Union[Batch, Data]
                           ) -> Tuple[Tensor, Tensor]:
        r"""The normalised labels of a batch of
        :func:`~pyg_unimol2.data.geometry.geometry_to_data` molecules
        (``energy`` ``[1]`` and ``forces`` ``[n, 3]`` each, ``NaN`` =
        unknown): energies ``[B]`` and forces ``[B, L, 3]``, ``NaN`` at
        padding (so that padded atoms never count in the loss)."""
        batch = _as_batch(batch)
        forces = to_dense_batch(batch.forces, batch.batch,
                                fill_value=float('nan'),
                                batch_size=batch.num_graphs)[0]
        return self.normalize(dataset, batch,
                              batch.energy.view(-1).to(torch.float64),
                              forces)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.backbone.config.name}, '
                + ', '.join(f'{d}={m!r}' for d, m in self.force_modes.items())
                + ')')
