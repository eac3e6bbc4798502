r"""Random crop of a featurized molecule to at most ``max_atoms`` atoms, as
``unimol_tools`` 0.1.6 does for Uni-Mol2 inputs (its
``data/conformer.py: mol2unimolv2``, default ``max_atoms=128``).

``unimol_tools`` first removes the hydrogens, then, when more than
``max_atoms`` atoms are left, keeps a uniformly random subset of
``max_atoms`` of them (a shuffled boolean mask) **in their original
order**. The graph features are computed on the whole molecule and then
restricted to the kept atoms: an atom's degree and feature codes, and the
shortest-path and bond codes of a pair, are those of the uncropped molecule.
:func:`crop_atoms` does the same on a featurized
:class:`~torch_geometric.data.Data` (hydrogens already removed by
:func:`~pyg_unimol2.data.featurize.from_mol`), with a seeded generator
instead of NumPy's global one: the kept atoms are a function of the seed,
the molecule's SMILES and its atom count only, so every conformer of a
molecule (same SMILES, same atom order) keeps the same atoms.
"""
import zlib
from typing import Optional, Sequence

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from .dense import PAIR_KEYS

__all__ = ['crop_atoms', 'crop_indices']

#: Per-atom attributes of a featurized molecule (``[n, ...]``).
NODE_KEYS = ('z', 'x', 'atom_feat', 'degree', 'pos', 'atom_y')


def crop_indices(num_atoms: int, max_atoms: int, seed: int,
                 key: str = '') -> np.ndarray:
    """The atoms :func:`crop_atoms` keeps: ``max_atoms`` of
    ``range(num_atoms)`` drawn without replacement by a generator seeded
    with :obj:`seed` and the CRC-32 of :obj:`key` (the SMILES), sorted.
    All atoms when there are not more than :obj:`max_atoms`."""
    if num_atoms <= max_atoms:
        return np.arange(num_atoms)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return np.sort(rng.choice(num_atoms, max_atoms, replace=False))


def crop_atoms(data: Data, max_atoms: int, seed: int = 0,
               keep: Optional[Sequence[int]] = None) -> Data:
    r"""A copy of :obj:`data` restricted to :obj:`keep` (default:
    :func:`crop_indices` of its atom count, :obj:`max_atoms`, :obj:`seed`
    and ``data.smiles``), atoms in their original order. Per-atom
    attributes (:data:`NODE_KEYS`) and the flattened pair tensors
    (``spd``, ``pair_feat``, ``pair_type``) are indexed, so their codes stay
    those of the whole molecule (as in ``unimol_tools``); bonds
    (``edge_index``, ``edge_attr``) between kept atoms are kept and
    renumbered. :obj:`data` is returned unchanged when it has at most
    :obj:`max_atoms` atoms and no :obj:`keep` is given.

    Raises:
        ValueError: :obj:`max_atoms` < 1.
    """
    if max_atoms < 1:
        raise ValueError(f'max_atoms must be at least 1, got {max_atoms}')
    n = data.num_nodes
    if keep is None:
        if n <= max_atoms:
            return data
        keep = crop_indices(n, max_atoms, seed, getattr(data, 'smiles', ''))
    index = torch.as_tensor(np.asarray(keep), dtype=torch.long)
    out = data.clone()
    for key in NODE_KEYS:
        if key in data:
            out[key] = data[key][index]
    for key in PAIR_KEYS:
        value = data[key].view(n, n, *data[key].shape[1:])
        out[key] = value[index][:, index].reshape(
            len(index) ** 2, *data[key].shape[1:])
    out.edge_index, out.edge_attr = subgraph(
        index, data.edge_index, data.edge_attr, relabel_nodes=True,
        num_nodes=n)
    return out
