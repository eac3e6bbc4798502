"""SE(3)-invariant Gaussian distance kernel of Uni-Mol2 (paper eq. 3)."""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inits import bert_init_

#: The official code truncates :math:`\pi`; kept for bit-level parity.
PI = 3.14159


#: Exponent below which a Gaussian is returned as 0 (:class:`GaussianKernel`).
_TAIL = -87.0

class GaussianKernel(nn.Module):
    r"""Gaussian basis expansion of interatomic distances with a learned
    affine transform per atom-pair type, from `"Uni-Mol2: Exploring
    Molecular Pretraining Model at Scale"
    <https://arxiv.org/abs/2406.14969>`_ (eq. 3):

    .. math::
        y_{ij} = \left(|a_{t^0_{ij}}| + |a_{t^1_{ij}}|\right) d_{ij}
        + b_{t^0_{ij}} + b_{t^1_{ij}},
        \qquad
        g_{ijk} = \frac{1}{\sqrt{2\pi}\,\sigma}
        \exp\!\left(-\frac{(y_{ij} - \mu_k)^2}{2\sigma^2}\right)

    with :math:`\mu_k` evenly spaced in :math:`[\mathrm{start},
    \mathrm{stop}]` (a persistent buffer ``mean``) and
    :math:`\sigma = \mathrm{std\_width}\cdot(\mu_2 - \mu_1)`. As in the
    official code, the absolute value is taken *before* summing the two type
    channels, :math:`\pi` is truncated to 3.14159, and the expansion is
    computed in float32 (also for half-precision inputs). Float64 distances
    are expanded in float64 (the official code would round them to
    float32), so that a float64 model is differentiable to float64
    precision w.r.t. the coordinates (energies and conservative forces).
    Gaussians below :math:`e^{-87}` (the far tails, subnormal in float32)
    are returned as 0, which keeps subnormal numbers out of the ``exp`` and
    the GEMMs that follow (20x and 8x slower on x86 CPUs). The scale/shift tables are ``mul``/``bias`` (padding row 0).

    Args:
        num_kernels (int, optional): number of Gaussians :math:`K`.
            (default: :obj:`128`)
        num_pair_types (int, optional): vocabulary of the pair-type codes.
            (default: :obj:`512`)
        start (float, optional): first mean. (default: :obj:`0.0`)
        stop (float, optional): last mean. (default: :obj:`9.0`)
        std_width (float, optional): width in units of the mean spacing.
            (default: :obj:`1.0`)

    Shapes:
        - **input:** distances :math:`(*)`, pair-type codes :math:`(*, 2)`
        - **output:** :math:`(*, K)`, float32 (float64 for float64
          distances)
    """
    def __init__(self, num_kernels: int = 128, num_pair_types: int = 512,
                 start: float = 0.0, stop: float = 9.0,
                 std_width: float = 1.0):
        super().__init__()
        self.num_kernels = num_kernels
        self.num_pair_types = num_pair_types
        self.start, self.stop, self.std_width = start, stop, std_width
        # Plain float32 arithmetic, exactly like the official attribute.
        cpu_mean = torch.linspace(start, stop, num_kernels, device='cpu')
        self.std = float((cpu_mean[1] - cpu_mean[0]) * std_width)
        self.register_buffer('mean', torch.linspace(start, stop,
                                                    num_kernels))
        self.mul = nn.Embedding(num_pair_types, 1, padding_idx=0)
        self.bias = nn.Embedding(num_pair_types, 1, padding_idx=0)
        self.reset_parameters()

    def reset_parameters(self, distance_scale: Optional[float] = None
                         ) -> None:
        r"""Resets ``mul``/``bias`` and the means.

        Args:
            distance_scale (float, optional): :obj:`None`: BERT init, as in
                official pretraining (which overrides their nominal 1/0
                constant init). A number :math:`s`: every type's scale is
                :math:`s / 2` and every shift 0, so that
                :math:`y_{ij} = s\,d_{ij}` and the Gaussians resolve
                distances over :math:`[\mathrm{start}, \mathrm{stop}] / s`
                from the first step. With the BERT init,
                :math:`y_{ij} \approx 0.03\,d_{ij}` falls on the first
                Gaussians and the model is almost blind to geometry until
                the scales have grown; this does not matter for masked-atom
                pretraining but stalls learning forces from scratch (JMP,
                :class:`~pyg_unimol2.models.EnergyForceModel`).
                (default: :obj:`None`)
        """
        with torch.no_grad():
            self.mean.copy_(
                torch.linspace(self.start, self.stop, self.num_kernels,
                               device=self.mean.device))
        if distance_scale is None:
            bert_init_(self.mul)
            bert_init_(self.bias)
            return
        with torch.no_grad():
            self.mul.weight.fill_(distance_scale / 2)
            self.mul.weight[self.mul.padding_idx].zero_()
            self.bias.weight.zero_()

    def forward(self, dist: Tensor, pair_type: Tensor) -> Tensor:
        r"""
        Args:
            dist (Tensor): distances ``[*]``.
            pair_type (LongTensor): pair-type codes ``[*, 2]``.

        Returns:
            Tensor: ``[*, K]``, float32 or (for float64 distances) float64.
        """
        dtype = torch.promote_types(dist.dtype, torch.float32)
        mul = self.mul(pair_type).abs().sum(dim=-2).to(dtype)
        bias = self.bias(pair_type).sum(dim=-2).to(dtype)
        y = mul * dist.to(dtype).unsqueeze(-1) + bias
        z = (y - self.mean.to(dtype)) / self.std
        # The far tails (exp(-87) = 1.6e-38 and below) are set to 0: as
        # subnormal numbers they make exp about 20x and the GEMMs of the
        # next layer (forward and backward) about 8x slower on x86 CPUs.
        q = (-0.5 * z * z).clamp(min=_TAIL)
        g = torch.exp(q).masked_fill(q == _TAIL, 0.0)
        return g / (math.sqrt(2 * PI) * self.std)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_kernels}, '
                f'start={self.start}, stop={self.stop})')


class NonLinear(nn.Module):
    r"""Two-layer perceptron ``layer2(GELU(layer1(x)))`` (the official
    ``NonLinear`` helper, kept for its parameter names).

    Args:
        in_channels (int): input size.
        out_channels (int): output size.
        hidden_channels (int, optional): hidden size, :obj:`in_channels` if
            :obj:`None`. (default: :obj:`None`)
    """
    def __init__(self, in_channels: int, out_channels: int,
                 hidden_channels: int = None):
        super().__init__()
        hidden_channels = hidden_channels or in_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.layer1 = nn.Linear(in_channels, hidden_channels)
        self.layer2 = nn.Linear(hidden_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bert_init_(self.layer1)
        bert_init_(self.layer2)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(F.gelu(self.layer1(x)))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels})')


class SE3InvariantKernel(nn.Module):
    r"""3D pair feature :math:`\psi` of `"Uni-Mol2: Exploring Molecular
    Pretraining Model at Scale" <https://arxiv.org/abs/2406.14969>`_
    (eq. 3): a :class:`GaussianKernel` expansion of the distance followed by
    a two-layer perceptron,

    .. math::
        \psi_{ij} = \mathbf{W}_2\,\mathrm{GELU}\!\left(\mathbf{W}_1
        \mathbf{g}_{ij} + \mathbf{b}_1\right) + \mathbf{b}_2 .

    Invariant to rotations, translations and reflections of the input
    coordinates since it only sees distances. Sub-module names follow the
    official ``se3_invariant_kernel`` (``gaussian``, ``out_proj.layer1``,
    ``out_proj.layer2``).

    Args:
        pair_dim (int): output size :math:`P`.
        num_kernels (int, optional): number of Gaussians :math:`K`.
            (default: :obj:`128`)
        num_pair_types (int, optional): vocabulary of the pair-type codes.
            (default: :obj:`512`)
        start (float, optional): first Gaussian mean. (default: :obj:`0.0`)
        stop (float, optional): last Gaussian mean. (default: :obj:`9.0`)
        std_width (float, optional): Gaussian width in mean spacings.
            (default: :obj:`1.0`)

    Shapes:
        - **input:** distances :math:`(*)`, pair-type codes :math:`(*, 2)`
        - **output:** :math:`(*, P)`
    """
    def __init__(self, pair_dim: int, num_kernels: int = 128,
                 num_pair_types: int = 512, start: float = 0.0,
                 stop: float = 9.0, std_width: float = 1.0):
        super().__init__()
        self.pair_dim = pair_dim
        self.num_kernels = num_kernels
        self.gaussian = GaussianKernel(num_kernels, num_pair_types, start,
                                       stop, std_width)
        self.out_proj = NonLinear(num_kernels, pair_dim)

    def reset_parameters(self, distance_scale: Optional[float] = None
                         ) -> None:
        r"""Resets the expansion (:meth:`GaussianKernel.reset_parameters`,
        with :obj:`distance_scale`) and the projection."""
        self.gaussian.reset_parameters(distance_scale)
        self.out_proj.reset_parameters()

    def forward(self, dist: Tensor, pair_type: Tensor) -> Tensor:
        r"""
        Args:
            dist (Tensor): distances ``[*]``.
            pair_type (LongTensor): pair-type codes ``[*, 2]``.

        Returns:
            Tensor: ``[*, P]``.
        """
        g = self.gaussian(dist, pair_type)
        return self.out_proj(g.to(self.out_proj.layer1.weight.dtype))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.pair_dim}, '
                f'num_kernels={self.num_kernels})')
