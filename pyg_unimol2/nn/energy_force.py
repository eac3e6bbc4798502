r"""Energy and force heads on the Uni-Mol2 representations (JMP-style
energy/force pretraining, `"From Molecules to Materials: Pre-training Large
Generalizable Models for Atomic Property Prediction"
<https://arxiv.org/abs/2310.16802>`_).

* :class:`EnergyHead`: extensive energy, a sum of per-atom terms;
* :class:`DirectForceHead`: forces predicted directly by an equivariant
  head shaped like the coordinate head of Uni-Mol2 (eq. 7,
  :class:`~pyg_unimol2.nn.PositionHead`);
* :func:`conservative_forces`: forces as the negative gradient of the
  energy w.r.t. the coordinates.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ._utils import safe_norm
from .heads import PositionHead
from .kernel import NonLinear


class EnergyHead(nn.Module):
    r"""Extensive energy as a sum of per-atom contributions:

    .. math::
        \epsilon_i = \mathbf{w}_2^{\top}\,\mathrm{GELU}\!\left(
        \mathbf{W}_1\,\mathrm{LN}(\mathbf{x}_i) + \mathbf{b}_1\right) + b_2,
        \qquad E = \sum_{i \in \mathrm{atoms}} \epsilon_i

    (the encoder output is un-normalised, hence the layer norm, as in the
    other Uni-Mol2 heads). It runs in the parameters' dtype even under
    autocast. The energy is invariant to rotations,
    translations and reflections, and to permutations of the atoms, as
    the atom representations are; padded atoms contribute nothing.

    Args:
        embed_dim (int): atom size :math:`E`.
        hidden_dim (int, optional): hidden size, :math:`E` if :obj:`None`.
            (default: :obj:`None`)

    Shapes:
        - **input:** atoms :math:`(B, L, E)`, optional atom mask
          :math:`(B, L)`
        - **output:** energies :math:`(B)`, per-atom contributions
          :math:`(B, L)` (zero for padding)
    """
    def __init__(self, embed_dim: int, hidden_dim: Optional[int] = None):
        super().__init__()
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim or embed_dim
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.mlp = NonLinear(embed_dim, 1, self.hidden_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Unit layer norm, BERT init of the perceptron."""
        self.layer_norm.reset_parameters()
        self.mlp.reset_parameters()

    def forward(self, x: Tensor,
                mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        r"""
        Args:
            x (Tensor): atom representation ``[B, L, E]``.
            mask (BoolTensor, optional): real atoms ``[B, L]``.

        Returns:
            (Tensor, Tensor): energies ``[B]`` and per-atom contributions
            ``[B, L]``.
        """
        # Outside autocast: a bf16 sum over atoms would cost the energy its
        # meV digits (the head is small next to the encoder).
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.mlp.layer1.weight.dtype)
            atom_energy = self.mlp(self.layer_norm(x)).squeeze(-1)
        if mask is not None:
            atom_energy = atom_energy.masked_fill(~mask, 0.0)
        return atom_energy.sum(dim=-1), atom_energy

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.embed_dim}, '
                f'hidden_dim={self.hidden_dim})')


class DirectForceHead(PositionHead):
    r"""SE(3)-equivariant direct force head: the coordinate head of
    `"Uni-Mol2: Exploring Molecular Pretraining Model at Scale"
    <https://arxiv.org/abs/2406.14969>`_ (eq. 7,
    :class:`~pyg_unimol2.nn.PositionHead`, whose parameters and attention
    it shares by inheritance) applied to *unit* vectors,

    .. math::
        \mathbf{F}_i = \sum_{h}\sum_{j \ne i} \mathbf{A}^h_{ij}\,
        \left(\mathbf{w}_h^{\top}\mathbf{W}^h_V\mathbf{y}_j\right)
        \frac{\mathbf{r}_j - \mathbf{r}_i}
        {\lVert\mathbf{r}_j - \mathbf{r}_i\rVert},

    with the per-head attention :math:`\mathbf{A}^h_{ij}` of the atom
    track biased by the pair track (see
    :class:`~pyg_unimol2.nn.PositionHead`). Unit vectors keep the force
    scale independent of interatomic distances; :math:`i = j`, coincident
    atoms and padding contribute zero. The output rotates (and reflects)
    with the coordinates, is translation invariant, and is zero for padded
    atoms. It is differentiable w.r.t. the offsets (no ``NaN`` gradient at
    zero offsets).

    Args:
        embed_dim (int): atom size :math:`E`.
        pair_dim (int): pair size :math:`P`.
        num_heads (int): heads :math:`H`.
        dropout (float, optional): dropout on the attention weights.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** atoms :math:`(B, L, E)`, pairs :math:`(B, L, L, P)` or
          :math:`(B, L + 1, L + 1, P)` (CLS first), offsets
          :math:`\delta_{ij} = \mathbf{r}_j - \mathbf{r}_i`
          :math:`(B, L, L, 3)`, optional atom mask :math:`(B, L)`
        - **output:** forces :math:`(B, L, 3)`
    """
    def __init__(self, embed_dim: int, pair_dim: int, num_heads: int,
                 dropout: float = 0.0):
        super().__init__(embed_dim, pair_dim, num_heads, dropout)

    def forward(self, x: Tensor, pair: Tensor, delta: Tensor,
                mask: Optional[Tensor] = None) -> Tensor:
        r"""
        Args:
            x (Tensor): atom representation ``[B, L, E]``.
            pair (Tensor): pair representation ``[B, L, L, P]`` or
                ``[B, L + 1, L + 1, P]``.
            delta (Tensor): ``delta[b, i, j] = pos[b, j] - pos[b, i]``,
                ``[B, L, L, 3]``.
            mask (BoolTensor, optional): real atoms ``[B, L]``.

        Returns:
            Tensor: forces ``[B, L, 3]``.
        """
        m = self.pair_weights(x, pair, mask)
        # the sum over j in the offsets' precision (float32 under autocast)
        dtype = torch.promote_types(m.dtype, delta.dtype)
        m, delta = m.to(dtype), delta.to(dtype)
        norm = safe_norm(delta)
        unit = delta / norm.masked_fill(norm == 0, 1.0).unsqueeze(-1)
        forces = (m.unsqueeze(-1) * unit).sum(dim=2)
        if mask is not None:
            forces = forces.masked_fill(~mask.unsqueeze(-1), 0.0)
        return forces


def conservative_forces(energy: Tensor, pos: Tensor,
                        create_graph: bool = True) -> Tensor:
    r"""Conservative forces :math:`\mathbf{F}_i = -\partial E /
    \partial \mathbf{r}_i` by automatic differentiation (through the
    Gaussian distance kernel of the backbone).

    Args:
        energy (Tensor): energies ``[B]`` computed from :obj:`pos` (the
            energies of different molecules depend on disjoint coordinates,
            so one gradient of their sum gives all forces).
        pos (Tensor): coordinates ``[B, L, 3]`` that require grad.
        create_graph (bool, optional): keep the graph of the gradient, so
            that a loss on the forces trains the model (training); without
            it the forces are a plain gradient (evaluation).
            (default: :obj:`True`)

    Returns:
        Tensor: forces ``[B, L, 3]`` (zero for padded atoms, which the
        energy does not depend on).
    """
    if not energy.requires_grad:
        raise ValueError("the energy does not depend on 'pos' (call the "
                         "model with 'pos.requires_grad_()' and grad enabled)")
    grad, = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph,
                                allow_unused=True)
    if grad is None:
        raise ValueError("the energy does not depend on 'pos'")
    return -grad
