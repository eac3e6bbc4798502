r"""Model FLOPs of a Uni-Mol2 step, counted analytically, and their check
against :class:`torch.utils.flop_counter.FlopCounterMode`.

The count is the matrix-multiply FLOPs (2 per multiply-add) of the
forward of :class:`~pyg_unimol2.models.UniMol2` with the position head
run and the unimol_tools linear head on CLS (the step of
``benchmarks/throughput.py`` and ``benchmarks/gpu.py``), for a padded batch
of :math:`B` molecules of :math:`L` atom slots, :math:`N = L + 1` tokens
(CLS first), in the algorithm this package runs (the outer product is
factorised, see :class:`~pyg_unimol2.nn.OuterProduct`). With
:math:`E, H, F, P, h, K` the atom size, heads, atom FFN width, pair size,
outer-product / triangle size and Gaussian kernels, :math:`T = BN`
tokens and :math:`R` rows of the per-pair layers, per block:

* atom attention: :math:`2T \cdot 4E^2` (Q, K, V, O) :math:`+ 4BN^2E`
  (scores, weighted values);
* pair bias: :math:`2RPH`;
* atom FFN: :math:`4TEF`;
* outer product: :math:`2T \cdot 2Eh + 2TPh^2 + 2BN^2Ph`;
* triangular multiplicative update: :math:`2RP(4h + P)` (projections,
  gates) :math:`+ 4BhN^3` (outgoing and incoming products)
  :math:`+ 2RhP` (output);
* pair FFN: :math:`4RP^2`;

and once: the Gaussian kernel's two-layer perceptron :math:`2BL^2K(K + P)`,
the position head :math:`6BLE^2 + 2BL^2E + 2BN^2PH` and the linear head
:math:`2BE`. :math:`R = BN^2` is the padded (dense) batch: the *model
FLOPs* of MFU, the same for both implementations. Our encoder runs the
per-pair layers on the :math:`R = \sum_b n_b^2` real pairs only
(``pair_rows``; :math:`n_b` tokens of molecule :math:`b`, CLS included);
the official code computes the padded pairs and materialises the outer
product, :math:`2BN^2h^2P` per block; neither changes the model FLOPs.

A training step is the forward plus a backward of twice the forward of
every matrix product on the gradient path of the loss (input and weight
gradients). The CLS loss reaches neither the position head nor the last
block's pair update (CLS does not depend on them), so those get no
backward. Our backward also recomputes the outer product's
:math:`2TPh^2` projection in every block that has a backward
(``recompute``): executed, but not model FLOPs (MFU does not count
recomputation).

Not counted, here as by :class:`~torch.utils.flop_counter.FlopCounterMode`
(which counts ``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions and the
fused attention kernels): element-wise work (layer norms, GELU, softmax,
gates, dropout, residuals, the Gaussian basis), embedding look-ups, the
packing gathers and the position head's element-wise value/offset
contractions. The counter ignores the CPU flash-attention kernel (eval
mode), which :func:`flop_check` maps to the counter's formula for the CUDA
attention kernels; in training (attention dropout) the CPU runs the math
path, plain ``bmm``. That formula's backward also counts the recomputed
scores (5 products, not 4), so a count on the GPU would exceed this one by
that recomputation.
"""
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch.utils.flop_counter import (FlopCounterMode,
                                      sdpa_backward_flop_count,
                                      sdpa_flop_count)

from pyg_unimol2.data import DenseBatch
from pyg_unimol2.models.unimol2 import UniMol2, UniMol2Config
from pyg_unimol2.nn._utils import SOFTMAX_BLOCK
from pyg_unimol2.nn.heads import LinearHead

#: Per-block components whose backward the CLS loss skips in the last block.
PAIR_UPDATE = ('outer_product', 'triangle', 'pair_ffn')
#: Module (last name of the path) each component of the count runs in.
MODULE_OF = {'attention': 'self_attn', 'pair_bias': 'self_attn',
             'atom_ffn': 'ffn', 'outer_product': 'opm',
             'triangle': 'pair_tri_mul', 'pair_ffn': 'pair_ffn',
             'kernel': 'se3_invariant_kernel',
             'position_head': 'movement_pred_head', 'head': 'LinearHead'}
#: The model of :func:`flop_check`: tiny, and every size (E, H, E / H, F,
#: P, h, K, blocks) distinct, so that no misplaced size cancels out.
CHECK_CONFIG = UniMol2Config(num_layers=2, embed_dim=48, num_heads=3,
                             ffn_dim=96, pair_dim=24, pair_hidden_dim=8,
                             num_kernels=20, name='check')


def _attention(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _attention_backward(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


#: The CPU flash-attention kernel (eval, or no attention dropout), which
#: :class:`~torch.utils.flop_counter.FlopCounterMode` does not count:
#: counted with its formulas for the CUDA kernels.
_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
    _attention_backward,
}


@dataclass
class StepFlops:
    r"""Analytic FLOPs of one batch (see the module docstring).

    Attributes:
        components (Dict[str, int]): forward FLOPs per component, summed
            over the blocks.
        no_grad (int): forward FLOPs without a backward (position head,
            the last block's pair update).
        recompute (int): FLOPs our backward recomputes (not model FLOPs).
    """
    components: Dict[str, int]
    no_grad: int
    recompute: int

    @property
    def forward(self) -> int:
        r"""FLOPs of an inference pass."""
        return sum(self.components.values())

    @property
    def train(self) -> int:
        r"""Model FLOPs of a training step (forward + backward)."""
        return 3 * self.forward - 2 * self.no_grad


def step_flops(config: UniMol2Config, batch_size: int, padded_atoms: int,
               pair_rows: Optional[int] = None,
               key_block: int = 1) -> StepFlops:
    r"""FLOPs of a batch of :obj:`batch_size` molecules padded to
    :obj:`padded_atoms` atoms; :obj:`pair_rows` rows of the per-pair layers
    (default: all :math:`BN^2` pairs, the model FLOPs); attention keys
    padded to a multiple of :obj:`key_block` (the CPU runs 16, see
    :class:`~pyg_unimol2.nn.SelfAttentionPairBias`; default 1: the model
    FLOPs)."""
    c = config
    B, L = batch_size, padded_atoms
    N = L + 1
    M = -(-N // key_block) * key_block  # attention keys
    T = B * N
    R = B * N * N if pair_rows is None else pair_rows
    E, H, F = c.embed_dim, c.num_heads, c.ffn_hidden_dim
    P, h, K = c.pair_dim, c.pair_hidden_dim, c.num_kernels
    block = dict(
        attention=2 * T * 4 * E * E + 4 * B * N * M * E,
        pair_bias=2 * R * P * H,
        atom_ffn=4 * T * E * F,
        outer_product=(2 * T * 2 * E * h + 2 * T * P * h * h +
                       2 * B * N * N * P * h),
        triangle=2 * R * P * (4 * h + P) + 4 * B * h * N**3 + 2 * R * h * P,
        pair_ffn=4 * R * P * P,
    )
    components = {k: c.num_layers * v for k, v in block.items()}
    components['kernel'] = 2 * B * L * L * K * (K + P)
    components['position_head'] = (6 * B * L * E * E + 2 * B * L * L * E +
                                   2 * B * N * N * P * H)
    components['head'] = 2 * B * E
    no_grad = (components['position_head'] +
               sum(block[k] for k in PAIR_UPDATE))
    recompute = (c.num_layers - 1) * 2 * T * P * h * h
    return StepFlops(components, no_grad, recompute)


def _counted(model: UniMol2, head: LinearHead, dense: DenseBatch,
             train: bool) -> FlopCounterMode:
    model.train(train)
    with FlopCounterMode(display=False,
                         custom_mapping=_CPU_ATTENTION) as counter:
        if train:
            cls = model(dense, compute_pos=True).cls
            head(cls).float().pow(2).mean().backward()
        else:
            with torch.no_grad():
                head(model(dense, compute_pos=True).cls)
    return counter


def _module_flops(counter: FlopCounterMode) -> Dict[str, int]:
    r"""Counted FLOPs per :data:`MODULE_OF` module, summed over blocks."""
    out: Dict[str, int] = {}
    for path, ops in counter.get_flop_counts().items():
        name = path.split('.')[-1]
        if name in MODULE_OF.values():
            out[name] = out.get(name, 0) + sum(ops.values())
    return out


def _rel(a: int, b: int) -> float:
    return abs(a - b) / b


def flop_check(dense: DenseBatch,
               config: UniMol2Config = CHECK_CONFIG) -> dict:
    r""":func:`step_flops` against
    :class:`~torch.utils.flop_counter.FlopCounterMode` for a fresh
    :obj:`config` model on the CPU batch :obj:`dense`: our default path
    (``packed``: the per-pair layers on the real pairs) and the dense path
    (``padded``: ``chunk_size`` = all rows, every pair computed; its count
    is the model FLOPs of MFU). Training: the CLS loss of the benchmark.
    Forward FLOPs are also compared per module (the counter's attribution
    of backward FLOPs to modules is not reliable)."""
    torch.manual_seed(0)
    head = LinearHead(config.embed_dim, 1)
    B, L = dense.atom_mask.shape
    real = int(((dense.atom_mask.sum(1) + 1)**2).sum())
    N = L + 1
    out = dict(config=config.name, batch_size=B, padded_atoms=L)
    for path, rows, chunk in (('packed', real, None),
                              ('padded', None, N)):
        flops = step_flops(config, B, L, rows, key_block=SOFTMAX_BLOCK)
        model = UniMol2(config, chunk_size=chunk)
        forward = _counted(model, head, dense, False)
        train = _counted(model, head, dense, True)
        counted = _module_flops(forward)
        modules = {m: dict(analytic=0, counted=counted.get(m, 0))
                   for m in MODULE_OF.values()}
        for comp, value in flops.components.items():
            modules[MODULE_OF[comp]]['analytic'] += value
        executed = flops.train + flops.recompute
        out[path] = dict(
            pair_rows=rows or B * N * N,
            forward=dict(analytic=flops.forward,
                         counted=forward.get_total_flops(),
                         rel_diff=_rel(flops.forward,
                                       forward.get_total_flops())),
            train=dict(analytic=executed, model=flops.train,
                       recompute=flops.recompute,
                       counted=train.get_total_flops(),
                       rel_diff=_rel(executed, train.get_total_flops()),
                       model_rel_diff=_rel(flops.train,
                                           train.get_total_flops())),
            modules=modules)
    return out
