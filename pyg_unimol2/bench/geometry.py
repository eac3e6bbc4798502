"""Pure-PyTorch neighbour graphs for the SchNet / DimeNet++ baselines.

PyG's ``radius_graph`` needs ``torch_cluster`` (or ``pyg-lib``) and DimeNet's
``triplets`` needs ``torch_sparse``. Molecules are small, so a dense
``O(N^2)`` distance matrix per mini-batch is cheap; edges never cross
molecules.
"""
from typing import Tuple

import torch
from torch import Tensor


def radius_graph(pos: Tensor, cutoff: float, batch: Tensor) -> Tensor:
    r"""All ordered pairs ``(j, i)``, ``i != j``, of atoms of the same
    molecule closer than :obj:`cutoff`, as ``edge_index`` ``[2, E]``
    (source first, PyG's ``source_to_target`` flow). Unlike PyG's version
    there is no cap on the number of neighbours.

    Args:
        pos (Tensor): coordinates ``[N, 3]``.
        cutoff (float): the radius, in the units of :obj:`pos`.
        batch (Tensor): molecule of each atom ``[N]``.
    """
    same = batch[:, None] == batch[None, :]
    close = torch.cdist(pos, pos) < cutoff
    close.fill_diagonal_(False)
    target, source = torch.nonzero(same & close, as_tuple=True)
    return torch.stack([source, target])


class RadiusInteractionGraph(torch.nn.Module):
    """SchNet's ``interaction_graph``: :func:`radius_graph` plus distances."""
    def __init__(self, cutoff: float = 10.0) -> None:
        super().__init__()
        self.cutoff = cutoff

    def forward(self, pos: Tensor, batch: Tensor) -> Tuple[Tensor, Tensor]:
        edge_index = radius_graph(pos, self.cutoff, batch)
        row, col = edge_index
        return edge_index, (pos[row] - pos[col]).norm(dim=-1)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(cutoff={self.cutoff})'


def triplets(edge_index: Tensor, num_nodes: int) -> Tuple[Tensor, ...]:
    r"""DimeNet's triplets ``k -> j -> i`` (``k != i``) of a directed graph,
    in the output convention of :func:`torch_geometric.nn.models.dimenet.
    triplets`: ``(i, j, idx_i, idx_j, idx_k, idx_kj, idx_ji)``, where
    ``i, j`` are the target and source of every edge and ``idx_kj``,
    ``idx_ji`` index the two edges of every triplet.

    For each edge ``j -> i`` the edges into ``j`` are a contiguous range of
    the edges sorted by target, so the triplets come from
    ``repeat_interleave`` without a sparse matrix.
    """
    row, col = edge_index  # j -> i
    num_edges = row.numel()
    order = torch.argsort(col, stable=True)
    deg = torch.bincount(col, minlength=num_nodes)
    ptr = torch.cumsum(deg, 0) - deg
    count = deg[row]  # edges k -> j for edge e = (j -> i)
    idx_ji = torch.arange(num_edges, device=row.device).repeat_interleave(count)
    first = torch.cumsum(count, 0) - count
    local = torch.arange(idx_ji.numel(), device=row.device) - \
        first.repeat_interleave(count)
    idx_kj = order[ptr[row].repeat_interleave(count) + local]
    idx_i, idx_j, idx_k = col[idx_ji], row[idx_ji], row[idx_kj]
    keep = idx_i != idx_k
    return (col, row, idx_i[keep], idx_j[keep], idx_k[keep], idx_kj[keep],
            idx_ji[keep])
