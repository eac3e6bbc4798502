"""Stack of two-track Uni-Mol2 blocks."""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ._utils import (pack_pairs, prefix_counts, real_pair_index,
                     unpack_pairs)
from .block import UniMol2Block


class UniMol2Encoder(nn.Module):
    r"""The two-track encoder of `"Uni-Mol2: Exploring Molecular Pretraining
    Model at Scale" <https://arxiv.org/abs/2406.14969>`_: a layer norm on
    each track applied *once* at the input, then :obj:`num_layers`
    :class:`UniMol2Block` s, and no final layer norm (the outputs are
    un-normalised, as in the official code):

    .. math::
        (\mathbf{x}, \mathbf{p}) \leftarrow
        (\mathrm{LN}(\mathbf{x}^0), \mathrm{LN}(\mathbf{p}^0)), \qquad
        (\mathbf{x}, \mathbf{p}) \leftarrow
        \mathrm{Block}_\ell(\mathbf{x}, \mathbf{p}),
        \quad \ell = 1, \dots, L_{\mathrm{layers}}

    Names follow the official ``encoder`` module (``layer_norm``,
    ``pair_layer_norm``, ``layers.{i}``). With :obj:`droppath_prob > 0` the
    stochastic-depth rate grows linearly from 0 to :obj:`droppath_prob`
    over the blocks (as in the official code).

    Pairs with a padded token are never computed: when :obj:`mask` has
    padding (and no :obj:`chunk_size` is set), the pair track runs on the
    rows of the :math:`K = \sum_b n_b^2` real pairs only (packed,
    :math:`(K, P)`), which removes the padded share of every per-pair
    layer norm, projection, FFN and dropout mask. Such pairs count as
    zero vectors (attention bias :math:`\mathbf{b}_B`) and are returned as
    zeros; with :obj:`chunk_size` the dense path zeroes them after every
    block, so both paths give the same outputs. Real tokens and pairs are
    unaffected either way (the padded ones never reach them).

    Args:
        num_layers (int): number of blocks.
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
        pair_dropout (float, optional): row-shared triangle dropout.
            (default: :obj:`0.25`)
        droppath_prob (float, optional): maximal stochastic-depth rate.
            (default: :obj:`0.0`)
        chunk_size (int, optional): default row-chunk size of the pair
            track. (default: :obj:`None`)
        checkpointing (bool, optional): recompute each block in the backward
            pass (activation checkpointing) while training.
            (default: :obj:`False`)

    Shapes:
        - **input:** atoms :math:`(B, N, E)`, pairs :math:`(B, N, N, P)`,
          optional token mask :math:`(B, N)`, optional token counts
          :math:`(B)`
        - **output:** atoms :math:`(B, N, E)`, pairs :math:`(B, N, N, P)`
    """
    def __init__(self, num_layers: int, embed_dim: int, pair_dim: int,
                 pair_hidden_dim: int, num_heads: int,
                 ffn_dim: Optional[int] = None, dropout: float = 0.1,
                 attention_dropout: float = 0.1,
                 activation_dropout: float = 0.0, pair_dropout: float = 0.25,
                 droppath_prob: float = 0.0,
                 chunk_size: Optional[int] = None,
                 checkpointing: bool = False):
        super().__init__()
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.pair_dim = pair_dim
        self.num_heads = num_heads
        self.chunk_size = chunk_size
        self.checkpointing = checkpointing
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.pair_layer_norm = nn.LayerNorm(pair_dim)
        if droppath_prob > 0.0:
            probs: List[float] = torch.linspace(0, droppath_prob,
                                                num_layers).tolist()
        else:
            probs = [0.0] * num_layers
        self.layers = nn.ModuleList([
            UniMol2Block(embed_dim, pair_dim, pair_hidden_dim, num_heads,
                         ffn_dim, dropout, attention_dropout,
                         activation_dropout, pair_dropout, probs[i])
            for i in range(num_layers)
        ])

    def reset_parameters(self) -> None:
        self.layer_norm.reset_parameters()
        self.pair_layer_norm.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, pair: Tensor,
                mask: Optional[Tensor] = None,
                num_tokens: Optional[Tensor] = None,
                chunk_size: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        r"""
        Args:
            x (Tensor): atom embeddings ``[B, N, E]``.
            pair (Tensor): pair embeddings ``[B, N, N, P]``.
            mask (BoolTensor, optional): real tokens ``[B, N]``.
            num_tokens (Tensor, optional): outer-product / triangle
                normaliser per molecule ``[B]``; defaults to the real token
                count (padding independent).
            chunk_size (int, optional): overrides :obj:`self.chunk_size`.

        Returns:
            (Tensor, Tensor): atom and pair representations (zero for
            pairs with a padded token).
        """
        chunk_size = chunk_size if chunk_size is not None else self.chunk_size
        B, N = x.shape[:2]
        x = self.layer_norm(x)
        index = pair_mask = counts = None
        if mask is not None and not bool(mask.all()):
            if chunk_size is None:  # packed [K, P]: real pairs only
                index = real_pair_index(mask)
                pair = pack_pairs(pair, index)
                # read back once for all blocks (a device sync on GPU)
                counts = prefix_counts(mask)
            else:
                pair_mask = (mask.unsqueeze(2) & mask.unsqueeze(1))[..., None]
        pair = self.pair_layer_norm(pair)
        if pair_mask is not None:
            pair = pair.masked_fill(~pair_mask, 0.0)
        use_ckpt = self.checkpointing and self.training and (
            torch.is_grad_enabled())
        # x and pair are new tensors (layer norms): without autograd the
        # blocks may update them in place
        inplace = not torch.is_grad_enabled()
        for layer in self.layers:
            if use_ckpt:
                x, pair = checkpoint(layer, x, pair, mask, num_tokens,
                                     chunk_size, index, False, counts,
                                     use_reentrant=False)
            else:
                x, pair = layer(x, pair, mask, num_tokens, chunk_size, index,
                                inplace, counts)
            if pair_mask is not None:
                pair = pair.masked_fill(~pair_mask, 0.0)
        if index is not None:
            pair = unpack_pairs(pair, index, B, N)
        return x, pair

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_layers={self.num_layers}, '
                f'embed_dim={self.embed_dim}, pair_dim={self.pair_dim}, '
                f'heads={self.num_heads})')
