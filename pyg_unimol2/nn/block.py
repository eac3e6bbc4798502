"""One two-track (atom + pair) Uni-Mol2 block (paper eqs. 4 and 5)."""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ._utils import dropout_multiplier, row_chunks
from .attention import SelfAttentionPairBias
from .outer_product import OuterProduct
from .transition import Transition
from .triangular_update import TriangularUpdate


class _MaskedResidual(torch.autograd.Function):
    r"""``x + y * mult`` as one ``addcmul`` with the dropout multiplier
    :obj:`mult` (:func:`dropout_multiplier`, broadcasting to :obj:`y`, of
    the shape of :obj:`x`), which is all the backward keeps: its gradient is
    one product (autograd's ``addcmul`` also keeps :obj:`y`)."""
    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, mult: Tensor) -> Tensor:
        ctx.save_for_backward(mult)
        return torch.addcmul(x, y, mult)

    @staticmethod
    def backward(ctx, grad: Tensor):
        mult, = ctx.saved_tensors
        return grad, grad * mult, None


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    r"""Stochastic depth: zeroes whole samples (dimension 0) with
    probability :obj:`p` and rescales the others by :math:`1/(1-p)`."""
    if p == 0.0 or not training:
        return x
    return x * dropout_multiplier(x, (x.size(0), ) + (1, ) * (x.dim() - 1),
                                  p)


class UniMol2Block(nn.Module):
    r"""Pre-norm two-track block from `"Uni-Mol2: Exploring Molecular
    Pretraining Model at Scale" <https://arxiv.org/abs/2406.14969>`_
    (eqs. 4 and 5), in the operation order of the official code:

    .. math::
        \mathbf{x} &\leftarrow \mathbf{x} + \mathrm{Drop}\big(
        \mathrm{Attn}(\mathrm{LN}(\mathbf{x}), \mathbf{p})\big) \\
        \mathbf{x} &\leftarrow \mathbf{x} + \mathrm{Drop}\big(
        \mathrm{FFN}(\mathrm{LN}(\mathbf{x}))\big) \\
        \mathbf{p} &\leftarrow \mathbf{p} + \mathrm{Drop}\big(
        \mathrm{OPM}(\mathrm{LN}(\mathbf{x}))\big) \\
        \mathbf{p} &\leftarrow \mathbf{p} + \mathrm{Drop}_{\mathrm{row}}\big(
        \mathrm{TriMul}(\mathrm{LN}(\mathbf{p}))\big) \\
        \mathbf{p} &\leftarrow \mathbf{p} + \mathrm{Drop}\big(
        \mathrm{FFN}_p(\mathrm{LN}(\mathbf{p}))\big)

    The attention bias is projected from the *un-normalised* pair
    representation of the previous block; the outer product uses the
    *updated* atom representation. :math:`\mathrm{Drop}` is element-wise
    dropout (or per-sample stochastic depth if :obj:`droppath_prob > 0`);
    :math:`\mathrm{Drop}_{\mathrm{row}}` uses one mask of shape
    :math:`(B, 1, N, P)` shared along the first pair index. Sub-module names
    follow the official ``encoder.layers.{i}``.

    The pair representation may be *packed*: the rows :math:`(K, P)` of the
    real pairs only, with their flat indices :obj:`pair_index` (as
    :class:`UniMol2Encoder` does for padded batches). Every per-pair layer
    norm, projection, FFN and dropout mask then skips the padded pairs;
    the row-shared and stochastic-depth masks are drawn at their dense
    shapes and gathered, so their distribution is unchanged.

    Args:
        embed_dim (int): atom size :math:`E`.
        pair_dim (int): pair size :math:`P`.
        pair_hidden_dim (int): outer-product / triangle size :math:`h`.
        num_heads (int): attention heads :math:`H`.
        ffn_dim (int, optional): atom FFN hidden size. (default: :obj:`E`)
        dropout (float, optional): residual dropout. (default: :obj:`0.1`)
        attention_dropout (float, optional): attention-weight dropout.
            (default: :obj:`0.1`)
        activation_dropout (float, optional): dropout inside the FFNs.
            (default: :obj:`0.0`)
        pair_dropout (float, optional): row-shared dropout of the triangle
            update. (default: :obj:`0.25`)
        droppath_prob (float, optional): stochastic depth rate replacing the
            residual dropout when positive. (default: :obj:`0.0`)

    Shapes:
        - **input:** atoms :math:`(B, N, E)`, pairs :math:`(B, N, N, P)`,
          optional token mask :math:`(B, N)`, optional token counts
          :math:`(B)`
        - **output:** atoms :math:`(B, N, E)`, pairs :math:`(B, N, N, P)`
    """
    def __init__(self, embed_dim: int, pair_dim: int, pair_hidden_dim: int,
                 num_heads: int, ffn_dim: Optional[int] = None,
                 dropout: float = 0.1, attention_dropout: float = 0.1,
                 activation_dropout: float = 0.0, pair_dropout: float = 0.25,
                 droppath_prob: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.pair_dim = pair_dim
        self.pair_hidden_dim = pair_hidden_dim
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim or embed_dim
        self.dropout = dropout
        self.pair_dropout = pair_dropout
        self.droppath_prob = droppath_prob

        self.self_attn = SelfAttentionPairBias(embed_dim, num_heads, pair_dim,
                                               dropout=attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.ffn = Transition(embed_dim, self.ffn_dim,
                              dropout=activation_dropout)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.x_layer_norm_opm = nn.LayerNorm(embed_dim)
        self.opm = OuterProduct(embed_dim, pair_dim, pair_hidden_dim)
        self.pair_layer_norm_ffn = nn.LayerNorm(pair_dim)
        self.pair_ffn = Transition(pair_dim, pair_dim,
                                   dropout=activation_dropout)
        self.pair_layer_norm_trimul = nn.LayerNorm(pair_dim)
        self.pair_tri_mul = TriangularUpdate(pair_dim, pair_hidden_dim)

    def reset_parameters(self) -> None:
        r"""Resets all sub-modules (BERT init, unit layer norms)."""
        for m in self.children():
            m.reset_parameters()

    def _residual(self, x: Tensor, y: Tensor,
                  molecule: Optional[Tensor] = None,
                  batch_size: int = 0, inplace: bool = False) -> Tensor:
        r"""``x + Drop(y)`` in one pass (:class:`_MaskedResidual`), into
        :obj:`x` if :obj:`inplace` (inference). For packed pairs ``[K, P]``,
        the per-sample stochastic-depth mask ``[B, 1]`` is gathered by the
        molecule index ``[K]`` of each pair."""
        if not self.training:
            return x.add_(y) if inplace else x + y
        if self.droppath_prob > 0.0:
            p = self.droppath_prob
            if molecule is None:
                shape = (y.size(0), ) + (1, ) * (y.dim() - 1)
                mult = dropout_multiplier(y, shape, p)
            else:
                mult = dropout_multiplier(y, (batch_size, 1),
                                          p).index_select(0, molecule)
        elif self.dropout > 0.0:
            mult = dropout_multiplier(y, y.shape, self.dropout)
        else:
            return x + y
        return _MaskedResidual.apply(x, y, mult)

    def _row_residual(self, x: Tensor, y: Tensor,
                      row: Optional[Tensor] = None,
                      num_rows: int = 0, inplace: bool = False) -> Tensor:
        r"""``x + Drop_row(y)`` with one mask ``[B, 1, N, P]`` shared along
        the first pair index. For packed pairs ``[K, P]`` the mask is drawn
        as ``[B * N, P]`` and row :math:`bN + j` is gathered for pair
        :math:`(b, i, j)` (:obj:`row` ``[K]``)."""
        p = self.pair_dropout
        if not self.training:
            return x.add_(y) if inplace else x + y
        if p == 0.0:
            return x + y
        if row is None:
            shape = (y.size(0), 1, y.size(2), y.size(3))
            mult = dropout_multiplier(y, shape, p)
        else:
            mult = dropout_multiplier(y, (num_rows, y.size(-1)),
                                      p).index_select(0, row)
        return _MaskedResidual.apply(x, y, mult)

    def forward(self, x: Tensor, pair: Tensor,
                mask: Optional[Tensor] = None,
                num_tokens: Optional[Tensor] = None,
                chunk_size: Optional[int] = None,
                pair_index: Optional[Tensor] = None,
                inplace: bool = False,
                counts: Optional[List[int]] = None) -> Tuple[Tensor, Tensor]:
        r"""
        Args:
            x (Tensor): atom representation ``[B, N, E]``.
            pair (Tensor): pair representation ``[B, N, N, P]``, or the
                rows ``[K, P]`` of the real pairs :obj:`pair_index`.
            mask (BoolTensor, optional): real tokens ``[B, N]``.
            num_tokens (Tensor, optional): outer-product / triangle
                normaliser per molecule ``[B]``; defaults to the real token
                count.
            chunk_size (int, optional): evaluate the pair-track modules in
                blocks of this many rows (dense pairs only).
                (default: :obj:`None`)
            pair_index (LongTensor, optional): flat indices
                :math:`bN^2 + iN + j` ``[K]`` of all real pairs of
                :obj:`mask` when :obj:`pair` is packed: the pair track then
                runs on those rows only (padded pairs are never computed).
            inplace (bool, optional): add the updates into :obj:`x` and
                :obj:`pair` (inference only: not differentiable).
                (default: :obj:`False`)
            counts (list of int, optional): the real-token counts of a
                :obj:`mask` whose real tokens come first, for the packed
                outer product (:meth:`OuterProduct.forward`).

        Returns:
            (Tensor, Tensor): updated atom and pair representations (pairs
            packed like the input).
        """
        B, N = x.shape[:2]
        molecule = row = None
        if pair_index is not None:
            chunk_size = None
            molecule = pair_index.div(N * N, rounding_mode='floor')
            row = molecule * N + pair_index % N
        x = self._residual(
            x, self.self_attn(self.self_attn_layer_norm(x), pair, mask,
                              pair_index), inplace=inplace)
        x = self._residual(x, self.ffn(self.final_layer_norm(x)),
                           inplace=inplace)

        pair = self._residual(
            pair,
            self.opm(self.x_layer_norm_opm(x), mask, num_tokens, chunk_size,
                     pair_index, counts), molecule, B, inplace)
        pair = self._row_residual(
            pair,
            self.pair_tri_mul(self.pair_layer_norm_trimul(pair), mask,
                              num_tokens, chunk_size, pair_index), row, B * N,
            inplace)
        if pair_index is not None:
            ffn = self.pair_ffn(self.pair_layer_norm_ffn(pair))
        else:
            ffn = row_chunks(
                lambda i, j: self.pair_ffn(self.pair_layer_norm_ffn(
                    pair[:, i:j])), N, chunk_size)
        return x, self._residual(pair, ffn, molecule, B, inplace)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.embed_dim}, '
                f'{self.pair_dim}, heads={self.num_heads}, '
                f'pair_hidden_dim={self.pair_hidden_dim})')
