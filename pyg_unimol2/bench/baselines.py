"""Standard baselines trained in the same harness as Uni-Mol2: PyG's
:class:`~torch_geometric.nn.models.SchNet` and
:class:`~torch_geometric.nn.models.DimeNetPlusPlus` (with the pure-PyTorch
neighbour graphs of :mod:`pyg_unimol2.bench.geometry`) and an MLP on Morgan
fingerprints. Each maps a mini-batch to a molecule representation; in
:class:`BaselineMultiTask` the task heads of
:class:`~pyg_unimol2.models.multitask.TaskModel` sit on it, exactly as on
Uni-Mol2's CLS representation, so baselines train in the same loop with the
same losses, metrics and checkpoints.
"""
from typing import Dict, Mapping, Sequence

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.nn.models import DimeNetPlusPlus, SchNet
from torch_geometric.utils import scatter

from ..models.multitask import TaskModel
from ..tasks import Task
from .geometry import RadiusInteractionGraph, radius_graph, triplets

BASELINES = ('schnet', 'dimenet++', 'fingerprint')


class DenseDimeNetPlusPlus(DimeNetPlusPlus):
    r"""PyG's DimeNet++ (`"Fast and Uncertainty-Aware Directional Message
    Passing for Non-Equilibrium Molecules" <https://arxiv.org/abs/2011.14115>`_)
    with :func:`~pyg_unimol2.bench.geometry.radius_graph` and
    :func:`~pyg_unimol2.bench.geometry.triplets` in place of the
    ``torch_cluster`` / ``torch_sparse`` ones; the forward pass is otherwise
    the parent's, line for line."""
    def forward(self, z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        edge_index = radius_graph(pos, self.cutoff, batch)
        i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji = triplets(
            edge_index, num_nodes=z.size(0))
        dist = (pos[i] - pos[j]).pow(2).sum(dim=-1).sqrt()
        pos_jk, pos_ij = pos[idx_j] - pos[idx_k], pos[idx_i] - pos[idx_j]
        a = (pos_ij * pos_jk).sum(dim=-1)
        b = torch.cross(pos_ij, pos_jk, dim=1).norm(dim=-1)
        angle = torch.atan2(b, a)
        rbf = self.rbf(dist)
        sbf = self.sbf(dist, angle, idx_kj)
        x = self.emb(z, rbf, i, j)
        P = self.output_blocks[0](x, rbf, i, num_nodes=pos.size(0))
        for block, output_block in zip(self.interaction_blocks,
                                       self.output_blocks[1:]):
            x = block(x, rbf, sbf, idx_kj, idx_ji)
            P = P + output_block(x, rbf, i, num_nodes=pos.size(0))
        return scatter(P, batch, dim=0, reduce='sum',
                       dim_size=int(batch.max()) + 1)


class GeometricBaseline(torch.nn.Module):
    """SchNet or DimeNet++ on elements and coordinates (``z``, ``pos``),
    with :obj:`num_targets` outputs per molecule."""
    def __init__(self, name: str, num_targets: int) -> None:
        super().__init__()
        self.name = name
        if name == 'schnet':
            self.net = SchNet(interaction_graph=RadiusInteractionGraph(10.0))
            # One output per target instead of SchNet's single one.
            self.net.lin2 = torch.nn.Linear(self.net.lin2.in_features,
                                            num_targets)
        elif name == 'dimenet++':
            self.net = DenseDimeNetPlusPlus(
                hidden_channels=128, out_channels=num_targets, num_blocks=4,
                int_emb_size=64, basis_emb_size=8, out_emb_channels=256,
                num_spherical=7, num_radial=6, cutoff=5.0)
        else:
            raise ValueError(f'unknown geometric baseline {name!r}')

    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch.z, batch.pos, batch.batch)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.name})'


def morgan_fingerprints(smiles: Sequence[str], radius: int = 2,
                        size: int = 2048) -> Tensor:
    """Morgan (ECFP4-like) bit vectors ``[N, size]`` as float32."""
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius,
                                                    fpSize=size)
    return torch.from_numpy(np.stack([
        gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in smiles
    ]).astype(np.float32))


class FingerprintMLP(torch.nn.Module):
    """A two-hidden-layer MLP on Morgan fingerprints (``batch.fp``)."""
    def __init__(self, num_targets: int, in_channels: int = 2048,
                 hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(in_channels, hidden), torch.nn.ReLU(),
            torch.nn.Dropout(dropout), torch.nn.Linear(hidden, hidden // 2),
            torch.nn.ReLU(), torch.nn.Linear(hidden // 2, num_targets))

    def forward(self, batch: Batch) -> Tensor:
        return self.mlp(batch.fp)


def build_baseline(name: str, num_targets: int) -> torch.nn.Module:
    """A baseline of :data:`BASELINES` with ``num_targets`` outputs."""
    if name == 'fingerprint':
        return FingerprintMLP(num_targets)
    return GeometricBaseline(name, num_targets)


#: Size of the representation a baseline gives its task heads.
REPRESENTATION = 128


class BaselineMultiTask(TaskModel):
    r"""A baseline trunk (:func:`build_baseline` with
    :data:`REPRESENTATION` outputs, a molecule representation) with the
    task heads of :class:`~pyg_unimol2.models.multitask.TaskModel`.
    Molecule-level tasks only. The fingerprint MLP computes the Morgan
    fingerprints of ``batch.smiles`` itself (cached per SMILES).

    Args:
        name (str): one of :data:`BASELINES`.
        groups (Mapping[str, Sequence[Task]]): the tasks of each dataset.
    """
    def __init__(self, name: str, groups: Mapping[str, Sequence[Task]]
                 ) -> None:
        super().__init__(groups, REPRESENTATION)
        if name not in BASELINES:
            raise ValueError(f'unknown baseline {name!r} (use one of '
                             f'{", ".join(BASELINES)})')
        atom_tasks = [t.name for t in self.tasks if t.level == 'atom']
        if atom_tasks:
            raise ValueError(f'the {name} baseline predicts molecule-level '
                             f'tasks only, not {atom_tasks}')
        self.kind = name
        self.trunk = build_baseline(name, REPRESENTATION)
        self._fps: Dict[str, Tensor] = {}

    def _fingerprints(self, smiles: Sequence[str]) -> Tensor:
        todo = [s for s in dict.fromkeys(smiles) if s not in self._fps]
        if todo:
            self._fps.update(zip(todo, morgan_fingerprints(todo)))
        return torch.stack([self._fps[s] for s in smiles])

    def forward(self, batch: Batch, dataset: str) -> Dict[str, Tensor]:
        if self.kind == 'fingerprint':
            device = next(self.parameters()).device
            batch.fp = self._fingerprints(list(batch.smiles)).to(device)
        rep = self.trunk(batch)
        return {t.name: head(rep) for t, head in self.dataset_heads(dataset)}

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.kind}, {list(self.groups)})'
