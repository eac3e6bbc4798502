"""Small internal helpers shared by the pair-track modules."""
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor


def token_counts(mask: Optional[Tensor], num_tokens: Optional[Tensor],
                 batch_size: int, num_nodes: int, dtype: torch.dtype,
                 device: torch.device) -> Tuple[Tensor, Tensor]:
    r"""Returns the float token mask ``m`` ``[B, N]`` and the normaliser
    ``n`` ``[B]`` of the outer product / triangle update.

    :obj:`num_tokens` defaults to the number of real tokens of each
    molecule (``mask.sum(-1)``), which makes the normalisations independent
    of padding. Passing the padded length ``N`` for every molecule
    reproduces the official (padding-dependent) code.
    """
    if mask is None:
        m = torch.ones(batch_size, num_nodes, dtype=dtype, device=device)
    else:
        m = mask.to(dtype)
    if num_tokens is None:
        n = m.sum(dim=-1)
    else:
        n = num_tokens.to(dtype=dtype, device=device)
    return m, n


def row_chunks(fn: Callable[[int, int], Tensor], size: int,
               chunk_size: Optional[int], dim: int = 1) -> Tensor:
    r"""Evaluates ``fn(start, end)`` on row blocks ``[start, end)`` of
    length :obj:`chunk_size` and concatenates the results along :obj:`dim`
    (a single call if :obj:`chunk_size` is :obj:`None` or covers all rows).
    """
    if chunk_size is None or chunk_size >= size:
        return fn(0, size)
    if chunk_size < 1:
        raise ValueError(f"'chunk_size' must be positive (got {chunk_size})")
    outs: List[Tensor] = [
        fn(i, min(i + chunk_size, size)) for i in range(0, size, chunk_size)
    ]
    return torch.cat(outs, dim=dim)


def real_pair_index(mask: Tensor) -> Tensor:
    r"""Flat indices :math:`bN^2 + iN + j` ``[K]`` of the pairs of real
    tokens of a token mask ``[B, N]``, in row-major order."""
    return (mask.unsqueeze(2) & mask.unsqueeze(1)).view(-1).nonzero().view(-1)


def pack_pairs(pair: Tensor, index: Tensor) -> Tensor:
    r"""Rows ``[K, C]`` of the pairs :obj:`index` of ``pair [B, N, N, C]``."""
    return pair.reshape(-1, pair.size(-1)).index_select(0, index)


def unpack_pairs(rows: Tensor, index: Tensor, batch_size: int,
                 num_nodes: int) -> Tensor:
    r"""Inverse of :func:`pack_pairs`: ``[B, N, N, C]`` holding :obj:`rows`
    at :obj:`index` and zeros elsewhere (``index_add`` into zeros: the
    indices are unique, and on CPU it is faster than ``index_copy``)."""
    out = rows.new_zeros(batch_size * num_nodes * num_nodes, rows.size(-1))
    return out.index_add(0, index, rows).view(batch_size, num_nodes,
                                              num_nodes, -1)


def safe_norm(v: Tensor, dim: int = -1) -> Tensor:
    r"""Euclidean norm of :obj:`v` along :obj:`dim` that is differentiable
    everywhere: exactly-zero vectors (the diagonal :math:`i = i` of the
    pairwise differences, padding pairs, coincident atoms) get norm ``0``
    and zero gradient instead of the ``NaN`` gradient of
    :math:`\sqrt{0}`. They are masked *before* the square root, so every
    other value equals :meth:`torch.Tensor.norm` bit for bit."""
    zero = (v == 0).all(dim=dim, keepdim=True)
    norm = v.masked_fill(zero, 1.0).norm(dim=dim, keepdim=True)
    return norm.masked_fill(zero, 0.0).squeeze(dim)
