"""Triangular multiplicative update of the pair track (paper eq. 5)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import pack_pairs, row_chunks, token_counts, unpack_pairs
from .inits import bert_init_


class TriangularUpdate(nn.Module):
    r"""Triangular multiplicative update of the pair representation, from
    `"Uni-Mol2: Exploring Molecular Pretraining Model at Scale"
    <https://arxiv.org/abs/2406.14969>`_ (eq. 5; "details aligned with
    Uni-Mol+"), with outgoing and incoming edges summed in one module that
    shares the projections :math:`\mathbf{a}, \mathbf{b}`:

    .. math::
        [\mathbf{a}_{ij} ; \mathbf{b}_{ij}] = m_{ij}\,n^{-1/2}\,
        (\mathbf{W}_{p}\mathbf{z}_{ij} + \mathbf{b}_p) \odot
        \sigma(\mathbf{W}_{g}\mathbf{z}_{ij} + \mathbf{b}_g)

        \mathbf{u}_{ij} = \sum_k \mathbf{a}_{ik} \odot \mathbf{b}_{jk}
        + \sum_k \mathbf{a}_{ki} \odot \mathbf{b}_{kj}

        \mathbf{z}'_{ij} = (\mathbf{W}_G\mathbf{z}_{ij} + \mathbf{b}_G)
        \odot \left(\mathbf{W}_Z\,\mathrm{LN}(\mathbf{u}_{ij})
        + \mathbf{b}_Z\right)

    where :math:`m_{ij}` is the pair mask, :math:`n` the token count of the
    molecule and the output gate is *linear* (no sigmoid), as in the
    official code. The official code uses the padded length for :math:`n`;
    by default this module uses each molecule's own count (pass
    :obj:`num_tokens` to override), which makes it padding independent. The
    triangle sums run as batched matrix products in a channel-first layout.
    Given packed pairs (the rows of the real pairs only, :obj:`pair_index`),
    every per-pair projection runs on those rows alone; only the
    :math:`2h`-channel :math:`\mathbf{a}, \mathbf{b}` are scattered into
    the dense layout of the triangle products (zero for padded pairs,
    as :math:`m_{ij} = 0` makes them anyway). Names follow the official
    ``pair_tri_mul`` module.

    Args:
        pair_dim (int): pair size :math:`P`.
        hidden_dim (int): triangle channel size :math:`h`.

    Shapes:
        - **input:** (layer-normalised) pairs :math:`(B, N, N, P)`, optional
          token mask :math:`(B, N)`, optional token counts :math:`(B)`;
          or packed pairs :math:`(K, P)` with the mask and :obj:`pair_index`
          :math:`(K)`
        - **output:** :math:`(B, N, N, P)`, or :math:`(K, P)` if packed
    """
    def __init__(self, pair_dim: int, hidden_dim: int):
        super().__init__()
        self.pair_dim = pair_dim
        self.hidden_dim = hidden_dim
        self.linear_ab_p = nn.Linear(pair_dim, 2 * hidden_dim)
        self.linear_ab_g = nn.Linear(pair_dim, 2 * hidden_dim)
        self.linear_g = nn.Linear(pair_dim, pair_dim)
        self.linear_z = nn.Linear(hidden_dim, pair_dim)
        self.layer_norm_out = nn.LayerNorm(hidden_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""BERT init: :math:`\mathcal{N}(0, 0.02^2)` weights, zero biases,
        unit layer norm."""
        for m in (self.linear_ab_p, self.linear_ab_g, self.linear_g,
                  self.linear_z, self.layer_norm_out):
            bert_init_(m)

    def forward(self, z: Tensor, mask: Optional[Tensor] = None,
                num_tokens: Optional[Tensor] = None,
                chunk_size: Optional[int] = None,
                pair_index: Optional[Tensor] = None) -> Tensor:
        r"""
        Args:
            z (Tensor): pair representation ``[B, N, N, P]``, or the rows
                ``[K, P]`` of the pairs :obj:`pair_index` (then :obj:`mask`
                is required).
            mask (BoolTensor, optional): real tokens ``[B, N]``.
            num_tokens (Tensor, optional): normaliser :math:`n` per molecule
                ``[B]``; defaults to the real token count.
            chunk_size (int, optional): compute the triangle sums and the
                output in blocks of this many rows :math:`i` (dense input
                only). (default: :obj:`None`)
            pair_index (LongTensor, optional): flat indices
                :math:`bN^2 + iN + j` ``[K]`` of the rows of a packed
                :obj:`z`, all real pairs of :obj:`mask`.

        Returns:
            Tensor: ``[B, N, N, P]``, or ``[K, P]`` if packed.
        """
        if pair_index is not None:
            B, N = mask.shape
            chunk_size = None
        else:
            B, N = z.shape[:2]
        m, n = token_counts(mask, num_tokens, B, N, z.dtype, z.device)
        if pair_index is not None:
            # every packed pair is real: m_i m_j = 1
            pair_scale = n.pow(-0.5)[pair_index.div(N * N,
                                                    rounding_mode='floor')]
        else:  # pair_scale[b, i, j] = m_i * m_j * n_b^(-1/2)
            pair_scale = (m * n.pow(-0.5).unsqueeze(-1)).unsqueeze(1)
            if mask is not None:
                pair_scale = pair_scale * m.unsqueeze(2)

        # One GEMM for the a/b projection and its gate (and, unchunked, the
        # output gate as well); `split` keeps the backward a single concat.
        lins = [self.linear_ab_p, self.linear_ab_g]
        if chunk_size is None:
            lins.append(self.linear_g)
        proj = F.linear(z, torch.cat([lin.weight for lin in lins]),
                        torch.cat([lin.bias for lin in lins]))
        parts = proj.split([lin.out_features for lin in lins], dim=-1)
        ab = parts[0] * torch.sigmoid(parts[1]) * pair_scale.unsqueeze(-1)
        if pair_index is not None:
            ab = unpack_pairs(ab, pair_index, B, N)
        # Channel-first [2, B * h, N, N] for the batched triangle products.
        h = self.hidden_dim
        ab = ab.view(B, N, N, 2, h).permute(3, 0, 4, 1, 2).contiguous()
        a, b = ab.view(2, B * h, N, N).unbind(0)

        def rows(start: int, end: int) -> Tensor:
            # outgoing: sum_k a[i, k] b[j, k]; incoming: sum_k a[k, i] b[k, j]
            u = torch.bmm(a[:, start:end], b.transpose(1, 2))
            u = torch.baddbmm(u, a[:, :, start:end].transpose(1, 2), b)
            u = u.view(B, h, end - start, N).permute(0, 2, 3, 1)
            if pair_index is not None:
                u = pack_pairs(u, pair_index)
            u = self.linear_z(self.layer_norm_out(u))
            if chunk_size is None:
                g = parts[2]
            else:
                g = self.linear_g(z[:, start:end])
            return g * u

        if pair_index is not None:
            return rows(0, N)
        return row_chunks(rows, N, chunk_size)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.pair_dim}, '
                f'hidden_dim={self.hidden_dim})')
