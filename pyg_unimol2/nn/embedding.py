"""Atom and pair input embeddings of Uni-Mol2 (paper eqs. 2 and 3)."""
from typing import Optional

import torch
from torch import Tensor, nn

from .inits import bert_init_


class AtomEmbedding(nn.Module):
    r"""Atom-track input embedding from `"Uni-Mol2: Exploring Molecular
    Pretraining Model at Scale" <https://arxiv.org/abs/2406.14969>`_ (eq. 2),
    with the learned CLS (virtual node) prepended at token index 0:

    .. math::
        \mathbf{x}^{0}_{i} = \mathbf{e}^{\mathrm{tok}}_{t_i}
        + \sum_{k=1}^{8} \mathbf{E}^{\mathrm{atom}}_{f_{ik}}
        + \mathbf{E}^{\mathrm{deg}}_{d_i},
        \qquad \mathbf{x}^{0}_{\mathrm{CLS}} = \mathbf{v}

    The token embedding :math:`\mathbf{e}^{\mathrm{tok}}` is passed in by the
    caller, so that it can live at the top level of the model as in the
    official checkpoints (``embed_tokens``). Sub-module names follow the
    official ``atom_feature`` module (``atom_encoder``, ``degree_encoder``,
    ``vnode_encoder``); code :obj:`0` is padding (zero, untrained row).

    Args:
        embed_dim (int): atom embedding size :math:`E`.
        num_atom_features (int, optional): vocabulary of the atom feature
            codes. (default: :obj:`512`)
        num_degrees (int, optional): vocabulary of the degree codes.
            (default: :obj:`128`)

    Shapes:
        - **input:** atom feature codes :math:`(B, L, K)`, degree codes
          :math:`(B, L)`, optional token embedding :math:`(B, L, E)`
        - **output:** :math:`(B, L + 1, E)`, CLS first
    """
    def __init__(self, embed_dim: int, num_atom_features: int = 512,
                 num_degrees: int = 128):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_atom_features = num_atom_features
        self.num_degrees = num_degrees
        self.atom_encoder = nn.Embedding(num_atom_features, embed_dim,
                                         padding_idx=0)
        self.degree_encoder = nn.Embedding(num_degrees, embed_dim,
                                           padding_idx=0)
        self.vnode_encoder = nn.Embedding(1, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""BERT init: :math:`\mathcal{N}(0, 0.02^2)`, padding rows zero."""
        for emb in (self.atom_encoder, self.degree_encoder,
                    self.vnode_encoder):
            bert_init_(emb)

    def forward(self, atom_feat: Tensor, degree: Tensor,
                token_emb: Optional[Tensor] = None) -> Tensor:
        r"""
        Args:
            atom_feat (LongTensor): atom feature codes ``[B, L, K]``.
            degree (LongTensor): degree codes ``[B, L]``.
            token_emb (Tensor, optional): embedded atom tokens ``[B, L, E]``.

        Returns:
            Tensor: ``[B, L + 1, E]`` with the CLS vector at index 0.
        """
        x = self.atom_encoder(atom_feat).sum(dim=-2)
        x = x + self.degree_encoder(degree)
        if token_emb is not None:
            x = x + token_emb
        cls = self.vnode_encoder.weight.to(x.dtype).expand(x.size(0), 1, -1)
        return torch.cat([cls, x], dim=1)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.embed_dim})'


class PairEmbedding(nn.Module):
    r"""Pair-track input embedding from `"Uni-Mol2: Exploring Molecular
    Pretraining Model at Scale" <https://arxiv.org/abs/2406.14969>`_ (eq. 3),
    with a learned CLS row and column:

    .. math::
        \mathbf{p}^{0}_{ij} = \mathbf{E}^{\mathrm{spd}}_{s_{ij}}
        + \frac{1}{3}\sum_{k=1}^{3} \mathbf{E}^{\mathrm{bond}}_{e_{ijk}}
        + \psi_{ij},
        \qquad \mathbf{p}^{0}_{\mathrm{CLS},j}
        = \mathbf{p}^{0}_{i,\mathrm{CLS}} = \mathbf{t}

    where :math:`\psi_{ij}` is an optional additive term, in Uni-Mol2 the 3D
    Gaussian kernel (:class:`~pyg_unimol2.nn.SE3InvariantKernel`), which
    lives at the top level of the official model. Note that bond codes are
    *averaged* (atom codes are summed), and the CLS row and column (CLS-CLS
    included) all hold the same learned vector :math:`\mathbf{t}`, as in the
    official ``edge_feature`` module whose sub-module names are kept
    (``edge_encoder``, ``shorest_path_encoder`` [sic],
    ``vnode_virtual_distance``).

    Args:
        pair_dim (int): pair embedding size :math:`P`.
        num_edges (int, optional): vocabulary of the bond codes.
            (default: :obj:`64`)
        num_spd (int, optional): vocabulary of the shortest-path codes.
            (default: :obj:`512`)

    Shapes:
        - **input:** shortest-path codes :math:`(B, L, L)`, bond codes
          :math:`(B, L, L, 3)`, optional additive term :math:`(B, L, L, P)`
        - **output:** :math:`(B, L + 1, L + 1, P)`, CLS row/column first
    """
    def __init__(self, pair_dim: int, num_edges: int = 64,
                 num_spd: int = 512):
        super().__init__()
        self.pair_dim = pair_dim
        self.num_edges = num_edges
        self.num_spd = num_spd
        self.edge_encoder = nn.Embedding(num_edges, pair_dim, padding_idx=0)
        self.shorest_path_encoder = nn.Embedding(num_spd, pair_dim,
                                                 padding_idx=0)
        self.vnode_virtual_distance = nn.Embedding(1, pair_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""BERT init: :math:`\mathcal{N}(0, 0.02^2)`, padding rows zero."""
        for emb in (self.edge_encoder, self.shorest_path_encoder,
                    self.vnode_virtual_distance):
            bert_init_(emb)

    def forward(self, spd: Tensor, pair_feat: Tensor,
                extra: Optional[Tensor] = None) -> Tensor:
        r"""
        Args:
            spd (LongTensor): shortest-path codes ``[B, L, L]``.
            pair_feat (LongTensor): bond codes ``[B, L, L, K]``.
            extra (Tensor, optional): term added to the atom pairs
                ``[B, L, L, P]`` (the 3D kernel).

        Returns:
            Tensor: ``[B, L + 1, L + 1, P]``.
        """
        B, L = spd.shape[:2]
        N, P = L + 1, self.pair_dim
        # Mean over the K bond fields, one lookup at a time so that no
        # [B, L, L, K, P] tensor is materialised.
        K = pair_feat.size(-1)
        bond = self.edge_encoder(pair_feat[..., 0])
        for k in range(1, K):
            bond = bond + self.edge_encoder(pair_feat[..., k])
        inner = self.shorest_path_encoder(spd) + bond / K
        if extra is not None:
            inner = inner + extra
        # CLS column, then CLS row (concatenation: its backward is a view).
        t = self.vnode_virtual_distance.weight.to(inner.dtype)
        out = torch.cat([t.view(1, 1, 1, P).expand(B, L, 1, P), inner], dim=2)
        return torch.cat([t.view(1, 1, 1, P).expand(B, 1, N, P), out], dim=1)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.pair_dim})'
