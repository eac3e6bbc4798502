"""Outer-product update of the pair track from the atom track (paper eq. 5)."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import pack_pairs, prefix_counts, row_chunks, token_counts
from .inits import bert_init_


#: Values of ``t = (b W^T)`` per block of molecules (4 MiB of float32):
#: :class:`_OuterRows` works block by block so that ``t`` stays in cache.
_BLOCK_VALUES = 2**20


class _OuterRows(torch.autograd.Function):
    r"""Rows of the projected outer product,
    ``z = baddbmm(bias, a, t^T)`` with ``t = (b W^T).view(B, N * P, h)``,
    for ``a: [B, n, h]``, ``b: [B, N, h]``, ``W: [P * h, h]``,
    ``bias: [B, 1, N * P]``. ``t`` holds :math:`h/n` times as many values as
    the output, so it is built, used and dropped one block of molecules at a
    time (:data:`_BLOCK_VALUES`: it stays in cache instead of going through
    memory), in the forward and again in the backward (it is never
    stored), which returns the gradients of :obj:`b` and :obj:`W` directly
    (no transposed copy of the gradient of ``t``)."""
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, weight: Tensor,
                bias: Tensor) -> Tensor:
        ctx.save_for_backward(a, b, weight)
        B, N, h = b.shape
        device = a.device.type
        dtype = torch.get_autocast_dtype(device) \
            if torch.is_autocast_enabled(device) else a.dtype
        out = a.new_empty(B, a.size(1), weight.size(0) * N // h, dtype=dtype)
        with torch.autocast(device, enabled=False):  # as autocast would
            a, b, weight, bias = (v.to(dtype) for v in (a, b, weight, bias))
            for m in _blocks(b, weight):
                t = F.linear(b[m], weight).view(m.stop - m.start, -1, h)
                torch.baddbmm(bias[m], a[m], t.transpose(1, 2), out=out[m])
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        # Differentiable ops only (no out=): energies differentiated twice
        # (conservative forces) differentiate this backward.
        a, b, weight = (v.to(grad.dtype) for v in ctx.saved_tensors)
        B, N, h = b.shape
        need = ctx.needs_input_grad
        grad_a, grad_b, grad_weight = [], [], 0
        for m in _blocks(b, weight):
            if need[0]:
                t = F.linear(b[m], weight).view(m.stop - m.start, -1, h)
                grad_a.append(torch.bmm(grad[m], t))
            if need[1] or need[2]:
                # d t[b, (j, p), c] = sum_i grad[b, i, (j, p)] a[b, i, c]
                grad_t = torch.bmm(grad[m].transpose(1, 2), a[m])
                grad_t = grad_t.view((m.stop - m.start) * N, -1)  # [., P h]
                if need[1]:
                    grad_b.append((grad_t @ weight).view(-1, N, h))
                if need[2]:
                    grad_weight = grad_weight + grad_t.t() @ b[m].reshape(
                        -1, h)
        return (torch.cat(grad_a) if need[0] else None,
                torch.cat(grad_b) if need[1] else None,
                grad_weight if need[2] else None,
                grad.sum(dim=1, keepdim=True) if need[3] else None)


class _PackedOuterRows(torch.autograd.Function):
    r"""The projected outer product of the real pairs only, packed: for
    molecules whose :obj:`counts` real tokens come first, molecule
    :math:`m` (:math:`n_m` tokens) gives the rows
    ``z_m = addmm(bias_m, a_m, t_m^T)`` ``[n_m, n_m P]``, i.e. its
    :math:`n_m^2` pairs in row-major order (those of
    :func:`~pyg_unimol2.nn._utils.real_pair_index`), with
    ``t_m = (b_m W^T).view(n_m P, h)``, for ``a, b: [B, N, h]``,
    ``W: [P * h, h]`` and the bias rows ``bias: [B, P]``. One molecule at
    a time, as :class:`_OuterRows` when a molecule fills a block: no padded
    row of ``t`` or of the output is computed and nothing is packed
    afterwards. ``t_m`` is recomputed in the backward."""
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, weight: Tensor, bias: Tensor,
                counts: List[int]) -> Tensor:
        ctx.save_for_backward(a, b, weight)
        ctx.counts = counts
        h, P = b.size(-1), bias.size(-1)
        device = a.device.type
        dtype = torch.get_autocast_dtype(device) \
            if torch.is_autocast_enabled(device) else a.dtype
        out = a.new_empty(sum(n * n for n in counts), P, dtype=dtype)
        with torch.autocast(device, enabled=False):  # as autocast would
            a, b, weight, bias = (v.to(dtype) for v in (a, b, weight, bias))
            start = 0
            for m, n in enumerate(counts):
                t = F.linear(b[m, :n], weight).view(n * P, h)
                torch.addmm(bias[m].repeat(n), a[m, :n], t.t(),
                            out=out[start:start + n * n].view(n, n * P))
                start += n * n
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        # Differentiable ops only (no out=), as in _OuterRows.
        a, b, weight = (v.to(grad.dtype) for v in ctx.saved_tensors)
        B, N, h = b.shape
        P = grad.size(-1)
        need = ctx.needs_input_grad
        grad_a, grad_b, grad_bias, grad_weight = [], [], [], 0
        start = 0
        for m, n in enumerate(ctx.counts):
            g = grad[start:start + n * n]
            start += n * n
            grad_bias.append(g.sum(dim=0))
            g = g.reshape(n, n * P)
            if need[0]:
                t = F.linear(b[m, :n], weight).view(n * P, h)
                grad_a.append(F.pad(g @ t, (0, 0, 0, N - n)))
            if need[1] or need[2]:
                grad_t = (g.t() @ a[m, :n]).view(n, P * h)
                if need[1]:
                    grad_b.append(F.pad(grad_t @ weight, (0, 0, 0, N - n)))
                if need[2]:
                    grad_weight = grad_weight + grad_t.t() @ b[m, :n]
        return (torch.stack(grad_a) if need[0] else None,
                torch.stack(grad_b) if need[1] else None,
                grad_weight if need[2] else None,
                torch.stack(grad_bias) if need[3] else None, None)


def _blocks(b: Tensor, weight: Tensor) -> List[slice]:
    """Slices of the molecules of ``b [B, N, h]`` in blocks of about
    :data:`_BLOCK_VALUES` values of ``t`` (``N * P * h`` per molecule; at
    least one molecule per block)."""
    B, N, _ = b.shape
    size = max(1, _BLOCK_VALUES // (N * weight.size(0)))
    return [slice(i, min(i + size, B)) for i in range(0, B, size)]


class OuterProduct(nn.Module):
    r"""Outer-product update of the pair representation from the atom
    representation, from `"Uni-Mol2: Exploring Molecular Pretraining Model
    at Scale" <https://arxiv.org/abs/2406.14969>`_ (eq. 5):

    .. math::
        [\mathbf{a}_i ; \mathbf{b}_i] = m_i\,n^{-1/2}\,
        (\mathbf{W}_{\mathrm{in}}\mathbf{x}_i + \mathbf{b}_{\mathrm{in}}),
        \qquad
        \mathbf{z}_{ij} = \frac{\mathbf{W}_{\mathrm{out}}\,
        \mathrm{vec}(\mathbf{a}_i \otimes \mathbf{b}_j)
        + \mathbf{b}_{\mathrm{out}}}{\epsilon + m_i m_j n^{-1}}

    with :math:`\mathbf{a}, \mathbf{b} \in \mathbb{R}^{h}`, the flattening
    :math:`\mathrm{vec}(\mathbf{a}\otimes\mathbf{b})_{ch+e} = a_c b_e`,
    :math:`m_i \in \{0, 1\}` the token mask, :math:`\epsilon = 10^{-3}`, and
    :math:`n` the token count of the molecule (CLS included). The official
    code uses the *padded* length for :math:`n`, which makes a molecule's
    output depend on its batch; by default this module uses each molecule's
    own count (pass :obj:`num_tokens` to override). For a real pair the
    normaliser is one number per molecule, :math:`1/(\epsilon + 1/n)`, and it
    is folded into :math:`\mathbf{a}` and the bias; pairs with a padded token
    (unused downstream) hold :math:`\mathbf{b}_{\mathrm{out}}/(\epsilon +
    1/n)` instead of the official :math:`\mathbf{b}_{\mathrm{out}}/\epsilon`.

    The :math:`(B, N, N, h, h)` outer product is never materialised:
    :math:`\mathbf{W}_{\mathrm{out}}` viewed as :math:`(Ph, h)` is first
    contracted with :math:`\mathbf{b}` (:math:`O(BNh^2P)`), then with
    :math:`\mathbf{a}` in one batched matrix product (:math:`O(BN^2hP)`),
    instead of :math:`O(BN^2h^2P)`; neither pass copies a transposed
    tensor, and only :math:`\mathbf{a}, \mathbf{b}` are kept for the
    backward (the intermediate is recomputed). Names follow the official
    ``opm`` module (``linear_in``, ``linear_out``).

    Args:
        embed_dim (int): atom size :math:`E`.
        pair_dim (int): pair size :math:`P`.
        hidden_dim (int, optional): projection size :math:`h`.
            (default: :obj:`32`)
        eps (float, optional): :math:`\epsilon`. (default: :obj:`1e-3`)

    Shapes:
        - **input:** atoms :math:`(B, N, E)`, optional token mask
          :math:`(B, N)`, optional token counts :math:`(B)`
        - **output:** :math:`(B, N, N, P)`, or :math:`(K, P)` with
          :obj:`pair_index` :math:`(K)`
    """
    def __init__(self, embed_dim: int, pair_dim: int, hidden_dim: int = 32,
                 eps: float = 1e-3):
        super().__init__()
        self.embed_dim = embed_dim
        self.pair_dim = pair_dim
        self.hidden_dim = hidden_dim
        self.eps = eps
        self.linear_in = nn.Linear(embed_dim, 2 * hidden_dim)
        self.linear_out = nn.Linear(hidden_dim * hidden_dim, pair_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""BERT init: :math:`\mathcal{N}(0, 0.02^2)` weights, zero biases."""
        bert_init_(self.linear_in)
        bert_init_(self.linear_out)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                num_tokens: Optional[Tensor] = None,
                chunk_size: Optional[int] = None,
                pair_index: Optional[Tensor] = None,
                counts: Optional[List[int]] = None) -> Tensor:
        r"""
        Args:
            x (Tensor): atom representation ``[B, N, E]``.
            mask (BoolTensor, optional): real tokens ``[B, N]``.
            num_tokens (Tensor, optional): normaliser :math:`n` per molecule
                ``[B]``; defaults to the real token count.
            chunk_size (int, optional): compute the output in blocks of
                this many rows :math:`i`. (default: :obj:`None`)
            pair_index (LongTensor, optional): return only the pairs with
                these flat indices :math:`bN^2 + iN + j` ``[K]``, packed.
            counts (list of int, optional): the real-token counts of
                :obj:`mask` if its real tokens come first
                (:func:`~pyg_unimol2.nn._utils.prefix_counts`), given by a
                caller that runs several blocks on one mask, so that they
                are read back from the device once; computed here when
                needed otherwise.

        Returns:
            Tensor: ``[B, N, N, P]``, or ``[K, P]`` with :obj:`pair_index`.
        """
        B, N, _ = x.shape
        h, P = self.hidden_dim, self.pair_dim
        m, n = token_counts(mask, num_tokens, B, N, x.dtype, x.device)
        ab = self.linear_in(x) * (m * n.pow(-0.5).unsqueeze(-1)).unsqueeze(-1)
        a, b = ab.split(h, dim=-1)
        # For a real pair, 1 / (eps + m_i m_j / n) = 1 / (eps + 1 / n) is one
        # number per molecule; fold it into `a` and the bias. (Pairs with a
        # padded token get bias / (eps + 1 / n) instead of the official
        # bias / eps; both are unused downstream.)
        norm = 1.0 / (self.eps + 1.0 / n)  # [B]
        a = a * norm.view(B, 1, 1)

        # t[b, j, (p, c)] = sum_e W[p, c, e] * b[b, j, e]: a plain linear map
        # with W viewed as [P * h, h] (no weight copy), then
        # z[b, i, (j, p)] = sum_c a[b, i, c] t[b, (j, p), c] (_OuterRows;
        # with chunk_size, t is rebuilt for every block of rows)
        weight = self.linear_out.weight.view(P * h, h).to(b.dtype)
        if pair_index is None or len(_blocks(b, weight)) < B:
            counts = None
        elif counts is None:
            counts = prefix_counts(mask)
        if counts is not None:  # a molecule per block: real rows only
            bias = self.linear_out.bias.to(b.dtype) * norm.view(B, 1)
            return _PackedOuterRows.apply(a, b, weight, bias, counts)
        bias = self.linear_out.bias.to(b.dtype).repeat(N)  # [N * P]
        bias = bias.view(1, 1, N * P) * norm.view(B, 1, 1)

        def rows(start: int, end: int) -> Tensor:
            z = _OuterRows.apply(a[:, start:end], b, weight, bias)
            return z.view(B, end - start, N, P)

        out = row_chunks(rows, N, chunk_size)
        return out if pair_index is None else pack_pairs(out, pair_index)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.embed_dim}, '
                f'{self.pair_dim}, hidden_dim={self.hidden_dim})')
