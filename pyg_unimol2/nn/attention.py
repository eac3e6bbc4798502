"""Multi-head self-attention with a pair-representation bias (paper eq. 4)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import dropout_multiplier, padded_length, unpack_pairs
from .inits import bert_init_


def _pad_keys(t: Tensor, size: int) -> Tensor:
    """``[B, N, H, d]`` zero-padded to ``[B, size, H, d]``."""
    return t if t.size(1) == size else F.pad(t, (0, 0, 0, 0, 0,
                                                 size - t.size(1)))


def _dropout_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor,
                       p: float) -> Tensor:
    r"""``Dropout(softmax(q k^T / sqrt(d) + bias)) v`` for ``q [B, H, N, d]``,
    ``k, v [B, H, M, d]``, ``bias [B, H, N, M]``: the math of the CPU
    training path of :func:`~torch.nn.functional.scaled_dot_product_attention`
    with the dropout mask of :func:`~pyg_unimol2.nn._utils.dropout_multiplier`
    (SDPA draws ``bernoulli_``, which costs more than the attention)."""
    B, H, N, d = q.shape
    M = k.size(2)
    scores = torch.baddbmm(bias.reshape(B * H, N, M),
                           q.reshape(B * H, N, d),
                           k.reshape(B * H, M, d).transpose(1, 2),
                           alpha=d**-0.5)
    weights = torch.softmax(scores, dim=-1) * dropout_multiplier(
        scores, scores.shape, p)
    return torch.bmm(weights, v.reshape(B * H, M, d)).view(B, H, N, d)


class SelfAttentionPairBias(nn.Module):
    r"""Multi-head self-attention over tokens with an additive bias
    projected from the pair representation, from `"Uni-Mol2: Exploring
    Molecular Pretraining Model at Scale"
    <https://arxiv.org/abs/2406.14969>`_ (eq. 4):

    .. math::
        \mathbf{A}^{h}_{ij} = \mathrm{softmax}_j\!\left(
        \frac{(\mathbf{W}^h_Q\mathbf{x}_i)^{\top}(\mathbf{W}^h_K\mathbf{x}_j)}
        {\sqrt{d}} + (\mathbf{W}_B\,\mathbf{p}_{ij} + \mathbf{b}_B)_h
        + m_j\right), \qquad
        \mathbf{o}_i = \mathbf{W}_O \big\Vert_{h=1}^{H}
        \sum_j \mathbf{A}^h_{ij}\,\mathbf{W}^h_V\mathbf{x}_j + \mathbf{b}_O

    with :math:`m_j = -\infty` for padded keys and :math:`0` otherwise (so
    padded *query* rows still attend to the real keys and never produce
    NaN). Query/key/value projections have no bias; heads are split
    head-major (head :math:`h` uses channels :math:`[hd, (h+1)d)`). As in
    the official code, no layer norm is applied to :math:`\mathbf{p}` here.
    Runs on :func:`torch.nn.functional.scaled_dot_product_attention`
    (with attention dropout while training: the same math with a cheaper
    dropout mask); on CPU with the keys padded to a multiple of 16
    (masked), where PyTorch's softmax over short rows is slow.
    The pair representation may be given *packed* (only the real pairs,
    see :obj:`pair_index`); pairs absent from it count as zero vectors
    (bias :math:`\mathbf{b}_B`).
    Names follow the official ``self_attn`` module.

    Args:
        embed_dim (int): token size :math:`E`.
        num_heads (int): number of heads :math:`H` (must divide :math:`E`).
        pair_dim (int): pair size :math:`P`.
        dropout (float, optional): dropout on the attention weights.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** tokens :math:`(B, N, E)`, pairs :math:`(B, N, N, P)`,
          optional key mask :math:`(B, N)` (``True`` = real), or packed
          pairs :math:`(K, P)` with :obj:`pair_index` :math:`(K)`
        - **output:** :math:`(B, N, E)`
    """
    def __init__(self, embed_dim: int, num_heads: int, pair_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"'embed_dim' ({embed_dim}) must be divisible "
                             f"by 'num_heads' ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.pair_dim = pair_dim
        self.dropout = dropout
        self.linear_q = nn.Linear(embed_dim, embed_dim, bias=False)
        self.linear_k = nn.Linear(embed_dim, embed_dim, bias=False)
        self.linear_v = nn.Linear(embed_dim, embed_dim, bias=False)
        self.linear_o = nn.Linear(embed_dim, embed_dim)
        self.linear_bias = nn.Linear(pair_dim, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""BERT init: :math:`\mathcal{N}(0, 0.02^2)` weights, zero biases."""
        for lin in (self.linear_q, self.linear_k, self.linear_v,
                    self.linear_o, self.linear_bias):
            bert_init_(lin)

    def forward(self, x: Tensor, pair: Tensor,
                mask: Optional[Tensor] = None,
                pair_index: Optional[Tensor] = None) -> Tensor:
        r"""
        Args:
            x (Tensor): tokens ``[B, N, E]``.
            pair (Tensor): pair representation ``[B, N, N, P]``, or the
                rows ``[K, P]`` of the pairs :obj:`pair_index`.
            mask (BoolTensor, optional): real tokens ``[B, N]``.
            pair_index (LongTensor, optional): flat pair indices
                :math:`bN^2 + iN + j` ``[K]`` of the rows of a packed
                :obj:`pair`.

        Returns:
            Tensor: ``[B, N, E]``.
        """
        B, N, _ = x.shape
        H, d = self.num_heads, self.head_dim
        # On CPU the keys are padded to a multiple of 16 (masked out): the
        # softmax over a row of, say, 10 keys runs 5-9x slower than over 16.
        M = padded_length(N, x.device)
        q = self.linear_q(x).view(B, N, H, d).transpose(1, 2)
        k = _pad_keys(self.linear_k(x).view(B, N, H, d), M).transpose(1, 2)
        v = _pad_keys(self.linear_v(x).view(B, N, H, d), M).transpose(1, 2)
        if pair_index is None:
            bias = self.linear_bias(pair)
        else:  # project the K real pairs only; absent pairs get b_B
            bias = unpack_pairs(F.linear(pair, self.linear_bias.weight),
                                pair_index, B, N) + self.linear_bias.bias
        bias = bias.permute(0, 3, 1, 2)  # [B, H, N, N]
        if M > N:
            bias = F.pad(bias, (0, M - N))  # [B, H, N, M]
            if mask is None:
                mask = x.new_ones(B, N, dtype=torch.bool)
            mask = F.pad(mask, (0, M - N), value=False)
        if mask is not None:
            bias = bias.masked_fill(~mask.view(B, 1, 1, M), float('-inf'))
        if self.training and self.dropout > 0.0:
            o = _dropout_attention(q, k, v, bias.to(q.dtype), self.dropout)
        else:
            o = F.scaled_dot_product_attention(q, k, v,
                                               attn_mask=bias.to(q.dtype))
        o = o.transpose(1, 2).reshape(B, N, self.embed_dim)
        return self.linear_o(o)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.embed_dim}, '
                f'heads={self.num_heads}, pair_dim={self.pair_dim})')
