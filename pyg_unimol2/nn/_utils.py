"""Small internal helpers shared by the pair-track modules."""
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


#: On CPU, softmax rows are padded to a multiple of this many entries
#: (:func:`short_row_softmax`, the keys of
#: :class:`~pyg_unimol2.nn.SelfAttentionPairBias`): PyTorch's CPU softmax
#: over, say, 10 values runs 5-9x slower than over 16.
SOFTMAX_BLOCK = 16


def padded_length(size: int, device: torch.device) -> int:
    r""":obj:`size` rounded up to a multiple of :data:`SOFTMAX_BLOCK` on CPU
    (unchanged on other devices)."""
    if device.type != 'cpu':
        return size
    return -(-size // SOFTMAX_BLOCK) * SOFTMAX_BLOCK


def short_row_softmax(logits: Tensor) -> Tensor:
    r"""Softmax over the last dimension, computed (on CPU) with the rows
    padded by :math:`-\infty` to :func:`padded_length` and the padding
    sliced off again (the same values, several times faster)."""
    size = logits.size(-1)
    padded = padded_length(size, logits.device)
    if padded == size:
        return torch.softmax(logits, dim=-1)
    logits = F.pad(logits, (0, padded - size), value=float('-inf'))
    return torch.softmax(logits, dim=-1)[..., :size]


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


def prefix_counts(mask: Tensor) -> Optional[List[int]]:
    r"""The real-token count of each molecule of a token mask ``[B, N]`` if
    every molecule's real tokens come first (as :func:`~pyg_unimol2.data.
    to_dense` pads), else :obj:`None`."""
    counts = mask.sum(dim=1)
    positions = torch.arange(mask.size(1), device=mask.device)
    if not bool((mask == (positions < counts.unsqueeze(1))).all()):
        return None
    return counts.tolist()


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


def dropout_multiplier(like: Tensor, shape: Sequence[int],
                       p: float) -> Tensor:
    r"""Dropout multiplier of :obj:`shape` in the dtype of :obj:`like`:
    :math:`1/(1-p)` with probability :math:`1-p`, else 0, with :math:`1-p`
    rounded to a multiple of :math:`2^{-16}`. Drawn as uniform 16-bit
    integers (four per random 64-bit word) compared with a threshold
    straight into the output (``lt(out=)``): a quarter of the CPU time of
    ``bernoulli_`` and its rescaling."""
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    threshold = round((1.0 - p) * 2**16) - 2**15
    if threshold >= 2**15:  # keep all (beyond the int16 range)
        return torch.full(shape, scale, dtype=like.dtype, device=like.device)
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64,
                        device=like.device).random_(-2**63, None)
    out = torch.empty(shape, dtype=like.dtype, device=like.device)
    torch.lt(words.view(torch.int16)[:numel].view(shape), threshold, out=out)
    return out.mul_(scale)
