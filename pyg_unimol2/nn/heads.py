"""Output heads of Uni-Mol2: 3D position, masked atom and property heads."""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import dropout_multiplier, short_row_softmax
from .inits import bert_init_


class PositionHead(nn.Module):
    r"""SE(3)-equivariant atom movement head from `"Uni-Mol2: Exploring
    Molecular Pretraining Model at Scale"
    <https://arxiv.org/abs/2406.14969>`_ (eq. 7), in the form of the
    official ``movement_pred_head``:

    .. math::
        \mathbf{A}^h_{ij} = \mathrm{softmax}_j\!\left(
        \frac{(\mathbf{W}^h_Q\mathbf{y}_i)^{\top}(\mathbf{W}^h_K\mathbf{y}_j)}
        {\sqrt{d}} + (\mathbf{W}_B\,\mathrm{LN}(\mathbf{p}_{ij})
        + \mathbf{b}_B)_h + m_j\right), \qquad
        \mathbf{y} = \mathrm{LN}(\mathbf{x})

        \Delta\mathbf{r}_i = \sum_{h}\sum_{j} \mathbf{A}^h_{ij}\,
        (\mathbf{r}_j - \mathbf{r}_i)\,
        \left(\mathbf{w}_h^{\top}\mathbf{W}^h_V\mathbf{y}_j\right)

    where :math:`\mathbf{w}_h` is the slice of the bias-free projection
    ``force_proj1`` that reads head :math:`h`. The output rotates with the
    input coordinates and is translation invariant; the predicted positions
    are :math:`\mathbf{r}_i + \Delta\mathbf{r}_i`. Note the official
    convention :math:`\delta_{ij} = \mathbf{r}_j - \mathbf{r}_i` (the paper
    writes :math:`\mathbf{r}_i - \mathbf{r}_j`; the sign is learned). The
    value/force contraction is reordered so that no
    :math:`(B, H, 3, L, d)` tensor is built.

    Args:
        embed_dim (int): atom size :math:`E`.
        pair_dim (int): pair size :math:`P`.
        num_heads (int): heads :math:`H`.
        dropout (float, optional): dropout on the attention weights.
            (default: :obj:`0.1`, hard-coded in the official code)

    Shapes:
        - **input:** atoms :math:`(B, L, E)`, pairs :math:`(B, L, L, P)`,
          relative positions :math:`\delta_{ij} = \mathbf{r}_j - \mathbf{r}_i`
          :math:`(B, L, L, 3)`, optional atom mask :math:`(B, L)` (the
          pairs may also be given as :math:`(B, L + 1, L + 1, P)`, CLS
          first)
        - **output:** displacements :math:`(B, L, 3)`
    """
    def __init__(self, embed_dim: int, pair_dim: int, num_heads: int,
                 dropout: float = 0.1):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"'embed_dim' ({embed_dim}) must be divisible "
                             f"by 'num_heads' ({num_heads})")
        self.embed_dim = embed_dim
        self.pair_dim = pair_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.force_proj1 = nn.Linear(embed_dim, 1, bias=False)
        self.linear_bias = nn.Linear(pair_dim, num_heads)
        self.pair_layer_norm = nn.LayerNorm(pair_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""BERT init (as the official from-scratch model)."""
        for m in self.children():
            bert_init_(m)

    def forward(self, x: Tensor, pair: Tensor, delta: Tensor,
                mask: Optional[Tensor] = None) -> Tensor:
        r"""
        Args:
            x (Tensor): atom representation ``[B, L, E]``.
            pair (Tensor): atom-pair representation ``[B, L, L, P]``, or
                ``[B, L + 1, L + 1, P]`` with a leading CLS row and column,
                which are dropped after the (per-pair) projection; this
                saves slicing and copying the large pair tensor.
            delta (Tensor): ``delta[b, i, j] = pos[b, j] - pos[b, i]``,
                ``[B, L, L, 3]``.
            mask (BoolTensor, optional): real atoms ``[B, L]``.

        Returns:
            Tensor: displacements ``[B, L, 3]``.
        """
        m = self.pair_weights(x, pair, mask)
        return (m.unsqueeze(-1) * delta.to(m.dtype)).sum(dim=2)

    def pair_weights(self, x: Tensor, pair: Tensor,
                     mask: Optional[Tensor] = None) -> Tensor:
        r"""The scalar weights :math:`m_{ij} = \sum_h \mathbf{A}^h_{ij}\,
        \mathbf{w}_h^{\top}\mathbf{W}^h_V\mathbf{y}_j` of the offsets
        ``[B, L, L]`` (zero for padded :math:`j`); arguments as in
        :meth:`forward`."""
        B, L, _ = x.shape
        H, d = self.num_heads, self.head_dim
        y = self.layer_norm(x)
        q = self.q_proj(y).view(B, L, H, d).transpose(1, 2)
        k = self.k_proj(y).view(B, L, H, d).transpose(1, 2)
        v = self.v_proj(y).view(B, L, H, d).transpose(1, 2)
        logits = torch.matmul(q * d**-0.5, k.transpose(-1, -2))
        bias = self.linear_bias(self.pair_layer_norm(pair))
        if bias.size(1) == L + 1:  # drop the CLS row/column after projecting
            bias = bias[:, 1:, 1:]
        logits = logits + bias.permute(0, 3, 1, 2)
        if mask is not None:
            logits = logits.masked_fill(~mask.view(B, 1, 1, L),
                                        float('-inf'))
        attn = short_row_softmax(logits)
        if self.training and self.dropout > 0.0:
            attn = attn * dropout_multiplier(attn, attn.shape, self.dropout)
        # s[b, h, j] = w_h . v[b, h, j]; m[b, i, j] = sum_h A[b, h, i, j] s[b, h, j]
        # (element-wise: these contractions have a size-1 side on which
        # batched GEMMs are slow)
        w = self.force_proj1.weight.view(1, H, 1, d)
        s = (v * w).sum(dim=-1)
        return (attn * s.unsqueeze(2)).sum(dim=1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.embed_dim}, '
                f'{self.pair_dim}, heads={self.num_heads})')


class MaskedLMHead(nn.Module):
    r"""Masked atom-type prediction head of `"Uni-Mol2: Exploring Molecular
    Pretraining Model at Scale" <https://arxiv.org/abs/2406.14969>`_ (the
    official ``lm_head``; layer norm *first*, unlike Uni-Mol v1):

    .. math::
        \mathrm{logits} = \mathbf{W}\,\mathrm{GELU}\!\left(\mathbf{W}_d\,
        \mathrm{LN}(\mathbf{x}) + \mathbf{b}_d\right) + \mathbf{b}

    Init: ``dense`` BERT-style, the output ``weight`` PyTorch's default
    Linear init (kaiming-uniform, since it is a bare parameter in the
    official code) and ``bias`` zero.

    Args:
        embed_dim (int): atom size :math:`E`.
        num_classes (int, optional): output vocabulary.
            (default: :obj:`128`)

    Shapes:
        - **input:** :math:`(*, E)`, optional boolean selection of rows
        - **output:** :math:`(*, C)` (or :math:`(M, C)` for the :math:`M`
          selected rows)
    """
    def __init__(self, embed_dim: int, num_classes: int = 128):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        self.bias = nn.Parameter(torch.empty(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bert_init_(self.dense)
        self.layer_norm.reset_parameters()
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, masked: Optional[Tensor] = None) -> Tensor:
        r"""
        Args:
            x (Tensor): atom representation ``[*, E]``.
            masked (BoolTensor, optional): rows to predict, ``[*]``.
        """
        if masked is not None:
            x = x[masked]
        x = F.gelu(self.dense(self.layer_norm(x)))
        return F.linear(x, self.weight, self.bias)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.embed_dim}, '
                f'num_classes={self.num_classes})')


class ClassificationHead(nn.Module):
    r"""Fine-tuning head on the CLS representation (the official
    ``classification_heads.<name>``), used for classification and
    regression (:class:`PropertyHead`):

    .. math::
        \mathbf{y} = \mathbf{W}_o\,\mathrm{Dropout}\!\left(\tanh\!\left(
        \mathbf{W}_d\,\mathrm{Dropout}(\mathbf{x}_{\mathrm{CLS}})
        + \mathbf{b}_d\right)\right) + \mathbf{b}_o

    Uses PyTorch's default Linear init (the official heads are registered
    after ``init_bert_params`` runs).

    Args:
        in_channels (int): input size :math:`E`.
        hidden_channels (int): hidden size (:math:`E` in the official code).
        out_channels (int): number of targets / classes.
        dropout (float, optional): pooler dropout. (default: :obj:`0.0`)

    The argument order is the official one
    (``input_dim, inner_dim, num_classes, pooler_dropout``).

    Shapes:
        - **input:** :math:`(B, E)`
        - **output:** :math:`(B, C)`
    """
    def __init__(self, in_channels: int, hidden_channels: int,
                 out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.dropout = dropout
        self.dense = nn.Linear(in_channels, hidden_channels)
        self.out_proj = nn.Linear(hidden_channels, out_channels)

    def reset_parameters(self) -> None:
        self.dense.reset_parameters()
        self.out_proj.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = torch.tanh(self.dense(x))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.out_proj(x)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.hidden_channels}, {self.out_channels})')


#: Regression of molecular properties on the CLS representation.
PropertyHead = ClassificationHead


class LinearHead(nn.Module):
    r"""Single linear layer on the CLS representation (the
    ``classification_head`` of unimol_tools):

    .. math::
        \mathbf{y} = \mathbf{W}_o\,\mathrm{Dropout}(\mathbf{x}_{\mathrm{CLS}})
        + \mathbf{b}_o

    Args:
        in_channels (int): input size :math:`E`.
        out_channels (int): number of targets / classes.
        dropout (float, optional): input dropout. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(B, E)`
        - **output:** :math:`(B, C)`
    """
    def __init__(self, in_channels: int, out_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dropout = dropout
        self.out_proj = nn.Linear(in_channels, out_channels)

    def reset_parameters(self) -> None:
        self.out_proj.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.out_proj(x)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels})')
