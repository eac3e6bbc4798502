"""Conversion of a PyG mini-batch of molecules into padded dense tensors.

A molecule :class:`~torch_geometric.data.Data` produced by
:mod:`pyg_unimol2.data.featurize` stores its pair tensors flattened (row-major,
``n * n`` rows for a molecule with ``n`` atoms), so that the stock
:class:`torch_geometric.loader.DataLoader` concatenates them without a custom
collate function. :func:`to_dense` turns such a :class:`~torch_geometric.data.Batch`
into the padded ``[B, L, ...]`` / ``[B, L, L, ...]`` tensors the Uni-Mol2 model
consumes, where ``L`` is the largest atom count in the batch.

Per-molecule attributes (``n`` atoms, ``E`` directed bonds):

============== =============== ======== ==============================================
attribute      shape           dtype    meaning
============== =============== ======== ==============================================
``z``          ``[n]``         int64    atom token = atomic number (official vocabulary)
``x``          ``[n, 9]``      int64    OGB atom features (paper Table 7 indices)
``atom_feat``  ``[n, 8]``      int64    official atom feature codes (Table 7 fields 1-8)
``degree``     ``[n]``         int64    official degree code (graph neighbours + 2)
``edge_index`` ``[2, E]``      int64    bonds, both directions
``edge_attr``  ``[E, 3]``      int64    OGB bond features (paper Table 8 indices)
``pos``        ``[n, 3]``      float32  coordinates in Angstrom
``spd``        ``[n * n]``     int16    official shortest-path code (hops + 1)
``pair_feat``  ``[n * n, 3]``  uint8    official per-pair bond codes
``pair_type``  ``[n * n, 2]``  uint8    official atom-pair type codes
``has_graph``  ``[1]``         bool     ``False``: graph features dropped (codes 1/511)
============== =============== ======== ==============================================
"""
from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_batch

ATOM_KEYS = ('z', 'atom_feat', 'degree', 'pos')
PAIR_KEYS = ('spd', 'pair_feat', 'pair_type')


@dataclass
class DenseBatch:
    r"""Padded tensors of a batch of ``B`` molecules with at most ``L`` atoms.

    Padding positions hold ``0`` (the official padding code) and are ``False``
    in :obj:`atom_mask`.

    Attributes:
        token (LongTensor): atom tokens ``[B, L]``.
        atom_feat (LongTensor): atom feature codes ``[B, L, 8]``.
        degree (LongTensor): degree codes ``[B, L]``.
        pos (Tensor): coordinates ``[B, L, 3]``.
        spd (LongTensor): shortest-path codes ``[B, L, L]``.
        pair_feat (LongTensor): bond codes ``[B, L, L, 3]``.
        pair_type (LongTensor): atom-pair type codes ``[B, L, L, 2]``.
        atom_mask (BoolTensor): real atoms ``[B, L]``.
    """
    token: Tensor
    atom_feat: Tensor
    degree: Tensor
    pos: Tensor
    spd: Tensor
    pair_feat: Tensor
    pair_type: Tensor
    atom_mask: Tensor

    @property
    def num_atoms(self) -> Tensor:
        """Number of real atoms per molecule, ``[B]``."""
        return self.atom_mask.sum(dim=1)

    @property
    def pair_mask(self) -> Tensor:
        """Real atom pairs, ``[B, L, L]``."""
        return self.atom_mask.unsqueeze(2) & self.atom_mask.unsqueeze(1)

    def to(self, device: torch.device,
           dtype: Optional[torch.dtype] = None) -> 'DenseBatch':
        """Moves every tensor to :obj:`device`; casts :obj:`pos` to
        :obj:`dtype` if given."""
        out = {f.name: getattr(self, f.name).to(device) for f in fields(self)}
        if dtype is not None:
            out['pos'] = out['pos'].to(dtype)
        return DenseBatch(**out)


def to_dense(batch: Batch, max_num_atoms: Optional[int] = None) -> DenseBatch:
    r"""Turns a :class:`~torch_geometric.data.Batch` (or a single
    :class:`~torch_geometric.data.Data`) of featurized molecules into padded
    dense tensors.

    Args:
        batch (Batch or Data): molecules from
            :mod:`pyg_unimol2.data.featurize`, batched by the stock
            :class:`torch_geometric.loader.DataLoader`.
        max_num_atoms (int, optional): pad to this length ``L`` instead of the
            largest molecule of the batch. (default: :obj:`None`)

    Returns:
        DenseBatch: the padded tensors, see :class:`DenseBatch`.
    """
    if not isinstance(batch, Batch):
        batch = Batch.from_data_list([batch])
    index = batch.batch
    num_graphs = batch.num_graphs
    counts = torch.bincount(index, minlength=num_graphs)
    L = int(counts.max()) if max_num_atoms is None else max_num_atoms
    if L < int(counts.max()):
        raise ValueError(f'max_num_atoms={L} is smaller than the largest '
                         f'molecule of the batch ({int(counts.max())} atoms)')

    def atoms(value: Tensor) -> Tensor:
        return to_dense_batch(value, index, fill_value=0, max_num_nodes=L,
                              batch_size=num_graphs)[0]

    token, atom_mask = to_dense_batch(batch.z, index, max_num_nodes=L,
                                      batch_size=num_graphs)

    # Row-major position (graph, i, j) of every flattened pair element.
    pair_counts = counts * counts
    graph = torch.repeat_interleave(torch.arange(num_graphs, device=index.device),
                                    pair_counts)
    start = torch.cumsum(pair_counts, 0) - pair_counts
    local = torch.arange(graph.numel(), device=index.device) - start[graph]
    n = counts[graph]
    row, col = local // n, local % n

    def pairs(value: Tensor) -> Tensor:
        value = value.long()
        out = value.new_zeros((num_graphs, L, L) + value.shape[1:])
        out[graph, row, col] = value
        return out

    return DenseBatch(
        token=token,
        atom_feat=atoms(batch.atom_feat),
        degree=atoms(batch.degree),
        pos=atoms(batch.pos),
        spd=pairs(batch.spd),
        pair_feat=pairs(batch.pair_feat),
        pair_type=pairs(batch.pair_type),
        atom_mask=atom_mask,
    )

