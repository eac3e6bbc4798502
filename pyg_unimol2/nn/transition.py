"""Position-wise feed-forward transition used by both Uni-Mol2 tracks."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import row_chunks
from .inits import bert_init_


class Transition(nn.Module):
    r"""Position-wise feed-forward network (the ``FFN`` of eqs. 4 and 5 of
    `"Uni-Mol2: Exploring Molecular Pretraining Model at Scale"
    <https://arxiv.org/abs/2406.14969>`_):

    .. math::
        \mathrm{FFN}(\mathbf{x}) = \mathbf{W}_2\,
        \mathrm{Dropout}\!\left(\mathrm{GELU}(\mathbf{W}_1\mathbf{x}
        + \mathbf{b}_1)\right) + \mathbf{b}_2

    with the exact (erf) GELU. Names follow the official ``ffn`` /
    ``pair_ffn`` modules (``linear_1``, ``linear_2``).

    Args:
        in_channels (int): input and output size.
        hidden_channels (int, optional): hidden size, :obj:`in_channels` if
            :obj:`None`. (default: :obj:`None`)
        dropout (float, optional): dropout after the activation.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(*, C)`
        - **output:** :math:`(*, C)`
    """
    def __init__(self, in_channels: int,
                 hidden_channels: Optional[int] = None,
                 dropout: float = 0.0):
        super().__init__()
        hidden_channels = hidden_channels or in_channels
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.dropout = dropout
        self.linear_1 = nn.Linear(in_channels, hidden_channels)
        self.linear_2 = nn.Linear(hidden_channels, in_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""BERT init: :math:`\mathcal{N}(0, 0.02^2)` weights, zero biases."""
        bert_init_(self.linear_1)
        bert_init_(self.linear_2)

    def _forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.linear_1(x))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.linear_2(x)

    def forward(self, x: Tensor, chunk_size: Optional[int] = None) -> Tensor:
        r"""
        Args:
            x (Tensor): input ``[*, C]``.
            chunk_size (int, optional): process blocks of this many entries
                along dimension 1. (default: :obj:`None`)
        """
        if chunk_size is None or x.dim() < 3:
            return self._forward(x)
        return row_chunks(lambda i, j: self._forward(x[:, i:j]), x.size(1),
                          chunk_size)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'hidden_channels={self.hidden_channels})')
