r"""Uni-Mol2 pretraining objectives: corruption of a clean batch and losses.

:func:`corrupt` turns a clean :class:`~pyg_unimol2.data.dense.DenseBatch`
into model inputs and targets, as a pure function of the batch and a
:class:`torch.Generator` (the official code draws the same quantities per
molecule in its data pipeline, ``unimol2_dataset.py``):

1. **feature dropping**: with probability :obj:`drop_feat_prob` a molecule
   loses its graph features (official codes ``atom_feat = degree =
   pair_feat = 1``, ``spd = 511``, ``pair_type = [2, 130]``); it then sees
   only elements and geometry;
2. **2D coordinates** (official code only, off by default): a molecule that
   keeps its features uses, with probability :obj:`use_2d_prob`, its RDKit
   2D coordinates as input *and* target;
3. **centering** of every molecule;
4. **token masking**: :math:`\lfloor p_m n + u \rfloor` atoms,
   :math:`u \sim U[0, 1)`, chosen uniformly without replacement, all get the
   mask token ``127``;
5. **coordinate noise** on :math:`\lfloor f n + u \rfloor` atoms chosen
   independently of the token mask;
6. **Kabsch alignment** of the whole noised conformation onto the clean
   one (:func:`kabsch_align`).

:func:`pretrain_loss` implements :math:`\mathcal{L} = \mathcal{L}_{atom} +
\mathcal{L}_{coor} + \mathcal{L}_{distance}` with the official
normalisations.

Defaults are the paper's; the defaults of the official code
(deepmodeling/Uni-Mol ``unimol2/tasks/unimol2.py``) differ:

================== ============== ==================
option             paper          official code
================== ============== ==================
``noise_type``     ``'normal'``   ``'uniform'``
``noise``          ``0.2``        ``1.0``
``noise_fraction`` ``1.0``        ``0.15``
``use_2d_prob``    ``0.0``        ``0.5``
================== ============== ==================

:meth:`ObjectiveConfig.official` returns the official code's settings.
"""
from dataclasses import dataclass, fields, replace
from typing import Dict, Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from ..data.dense import DenseBatch
from ..errors import ConfigError
from ..data.encoding import (DROPPED_ATOM_FEAT, DROPPED_DEGREE,
                             DROPPED_PAIR_FEAT, DROPPED_PAIR_TYPE,
                             DROPPED_SPD)
from ..models.unimol2 import MASK_IDX, UniMol2Output

__all__ = ['ObjectiveConfig', 'PretrainBatch', 'NOISE_TYPES', 'corrupt',
           'kabsch_align', 'pretrain_loss']

NOISE_TYPES = ('normal', 'trunc_normal', 'uniform', 'none')


@dataclass
class ObjectiveConfig:
    r"""Settings of :func:`corrupt` and :func:`pretrain_loss` (defaults:
    the paper).

    Args:
        mask_prob (float): fraction :math:`p_m` of atoms whose token is
            masked. (default: :obj:`0.15`)
        noise_type (str): ``'normal'`` (:math:`\mathcal{N}(0, \sigma^2)`),
            ``'trunc_normal'`` (normal clipped at :math:`\pm 2\sigma`),
            ``'uniform'`` (:math:`U(-\sigma, \sigma)`) or ``'none'``.
            (default: :obj:`'normal'`)
        noise (float): :math:`\sigma` in Angstrom. (default: :obj:`0.2`)
        noise_fraction (float): fraction :math:`f` of atoms that are noised.
            (default: :obj:`1.0`)
        drop_feat_prob (float): probability that a molecule's graph
            features are dropped. (default: :obj:`0.5`)
        use_2d_prob (float): probability that a molecule with features
            uses 2D coordinates. (default: :obj:`0.0`)
        atom_weight (float): weight of :math:`\mathcal{L}_{atom}`.
        coord_weight (float): weight of :math:`\mathcal{L}_{coor}`.
        dist_weight (float): weight of :math:`\mathcal{L}_{distance}`.
    """
    mask_prob: float = 0.15
    noise_type: str = 'normal'
    noise: float = 0.2
    noise_fraction: float = 1.0
    drop_feat_prob: float = 0.5
    use_2d_prob: float = 0.0
    atom_weight: float = 1.0
    coord_weight: float = 1.0
    dist_weight: float = 1.0

    def __post_init__(self):
        if self.noise_type not in NOISE_TYPES:
            raise ConfigError(f'noise_type must be one of {NOISE_TYPES}, '
                              f'got {self.noise_type!r}')
        for f in fields(self):
            if f.name.endswith(('prob', 'fraction')) and \
                    not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ConfigError(f'{f.name} must be in [0, 1], got '
                                  f'{getattr(self, f.name)}')

    @classmethod
    def official(cls, **overrides) -> 'ObjectiveConfig':
        """The official code's defaults (uniform noise of 1 Angstrom on 15%
        of the atoms, 2D coordinates for half of the featured molecules)."""
        return replace(cls(noise_type='uniform', noise=1.0,
                           noise_fraction=0.15, use_2d_prob=0.5), **overrides)


@dataclass
class PretrainBatch:
    r"""Model inputs and targets produced by :func:`corrupt`.

    Attributes:
        inputs (DenseBatch): masked tokens, dropped features and aligned
            noised coordinates ``[B, L, 3]``.
        target_token (LongTensor): original tokens at masked atoms, ``0``
            elsewhere, ``[B, L]``.
        masked (BoolTensor): masked atoms ``[B, L]``.
        target_pos (Tensor): clean centered coordinates ``[B, L, 3]``.
        noised (BoolTensor): noised atoms ``[B, L]``.
    """
    inputs: DenseBatch
    target_token: Tensor
    masked: Tensor
    target_pos: Tensor
    noised: Tensor

    def to(self, device: torch.device) -> 'PretrainBatch':
        return PretrainBatch(self.inputs.to(device),
                             self.target_token.to(device),
                             self.masked.to(device),
                             self.target_pos.to(device),
                             self.noised.to(device))


def _choose(atom_mask: Tensor, fraction: float,
            generator: torch.Generator) -> Tensor:
    r"""Per molecule, :math:`\lfloor f n + u \rfloor` real atoms chosen
    uniformly without replacement, ``[B, L]`` bool."""
    B, L = atom_mask.shape
    n = atom_mask.sum(dim=1)
    count = (fraction * n + torch.rand(B, generator=generator)).floor()
    keys = torch.rand(B, L, generator=generator).masked_fill(~atom_mask, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    return (rank < count.unsqueeze(1)) & atom_mask


def _noise(shape: torch.Size, kind: str, scale: float,
           generator: torch.Generator) -> Tensor:
    if kind == 'uniform':
        return (torch.rand(shape, generator=generator) * 2 - 1) * scale
    if kind == 'none':
        return torch.zeros(shape)
    noise = torch.randn(shape, generator=generator) * scale
    if kind == 'trunc_normal':
        noise = noise.clamp(-2 * scale, 2 * scale)
    return noise


def kabsch_align(P: Tensor, Q: Tensor,
                 mask: Optional[Tensor] = None) -> Tensor:
    r"""Rigidly superimposes every conformation :math:`P` onto :math:`Q`
    (Kabsch algorithm; rotation and translation, no reflection):

    .. math::
        H = \bar{P}^{\top}\bar{Q} = U \Sigma V^{\top}, \qquad
        R = V\,\mathrm{diag}(1, 1, \det(V U^{\top}))\,U^{\top}, \qquad
        \mathbf{p}'_i = R(\mathbf{p}_i - \mathbf{c}_P) + \mathbf{c}_Q

    with :math:`\bar{P}, \bar{Q}` the centered real atoms and
    :math:`\mathbf{c}` the centroids; :math:`R` minimises
    :math:`\sum_i \lVert R\bar{\mathbf{p}}_i - \bar{\mathbf{q}}_i\rVert^2`.
    Computed in float64.

    Args:
        P (Tensor): conformations to move ``[B, L, 3]``.
        Q (Tensor): reference conformations ``[B, L, 3]``.
        mask (BoolTensor, optional): real atoms ``[B, L]``; padding atoms
            are ignored and returned unchanged.

    Returns:
        Tensor: aligned :math:`P`, ``[B, L, 3]``, dtype of :obj:`P`.
    """
    if mask is None:
        mask = P.new_ones(P.shape[:2], dtype=torch.bool)
    w = mask.unsqueeze(-1).double()
    n = w.sum(dim=1, keepdim=True).clamp_min(1)
    P64, Q64 = P.double(), Q.double()
    cP = (P64 * w).sum(dim=1, keepdim=True) / n
    cQ = (Q64 * w).sum(dim=1, keepdim=True) / n
    Pc, Qc = (P64 - cP) * w, (Q64 - cQ) * w
    U, _, Vh = torch.linalg.svd(Pc.transpose(1, 2) @ Qc)
    V = Vh.transpose(1, 2)
    d = torch.linalg.det(V @ U.transpose(1, 2)).sign()
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d),
                                      torch.where(d == 0, 1.0, d)], dim=-1))
    R = V @ D @ U.transpose(1, 2)
    aligned = (P64 - cP) @ R.transpose(1, 2) + cQ
    return torch.where(mask.unsqueeze(-1), aligned, P64).to(P.dtype)


def _center(pos: Tensor, atom_mask: Tensor) -> Tensor:
    w = atom_mask.unsqueeze(-1).to(pos.dtype)
    center = (pos * w).sum(dim=1, keepdim=True) / \
        w.sum(dim=1, keepdim=True).clamp_min(1)
    return (pos - center) * w


def corrupt(batch: DenseBatch, config: ObjectiveConfig,
            generator: torch.Generator,
            pos_2d: Optional[Tensor] = None) -> PretrainBatch:
    r"""Applies the pretraining corruption (steps 1-6 of the module
    docstring) to a clean CPU batch.

    Args:
        batch (DenseBatch): clean molecules, ``B`` molecules of at most
            ``L`` atoms, on the CPU.
        config (ObjectiveConfig): the objective settings.
        generator (torch.Generator): CPU generator; the result is a function
            of the batch and its state.
        pos_2d (Tensor, optional): RDKit 2D coordinates ``[B, L, 3]``;
            needed when :obj:`config.use_2d_prob` is positive.

    Returns:
        PretrainBatch: inputs and targets.
    """
    mask = batch.atom_mask.bool()
    B, L = mask.shape
    drop = torch.rand(B, generator=generator) < config.drop_feat_prob
    use_2d = (torch.rand(B, generator=generator) < config.use_2d_prob) & ~drop
    if bool(use_2d.any()) and pos_2d is None:
        raise ValueError("'use_2d_prob' > 0 needs 'pos_2d'")

    atom_drop = drop.view(B, 1) & mask
    pair_drop = atom_drop.unsqueeze(2) & atom_drop.unsqueeze(1)
    pair_type = batch.pair_type.clone()
    pair_type[pair_drop] = torch.tensor(DROPPED_PAIR_TYPE,
                                        dtype=pair_type.dtype)

    pos = batch.pos.float()
    if pos_2d is not None:
        pos = torch.where(use_2d.view(B, 1, 1), pos_2d.float(), pos)
    target_pos = _center(pos, mask)

    masked = _choose(mask, config.mask_prob, generator)
    noised = _choose(mask, config.noise_fraction, generator)
    noise = _noise(target_pos.shape, config.noise_type, config.noise,
                   generator)
    noisy = target_pos + noise * noised.unsqueeze(-1)
    src_pos = kabsch_align(noisy, target_pos, mask)

    inputs = DenseBatch(
        token=batch.token.masked_fill(masked, MASK_IDX),
        atom_feat=batch.atom_feat.masked_fill(atom_drop.unsqueeze(-1),
                                              DROPPED_ATOM_FEAT),
        degree=batch.degree.masked_fill(atom_drop, DROPPED_DEGREE),
        pos=src_pos,
        spd=batch.spd.masked_fill(pair_drop, DROPPED_SPD),
        pair_feat=batch.pair_feat.masked_fill(pair_drop.unsqueeze(-1),
                                              DROPPED_PAIR_FEAT),
        pair_type=pair_type,
        atom_mask=batch.atom_mask)
    return PretrainBatch(inputs=inputs,
                         target_token=batch.token.masked_fill(~masked, 0),
                         masked=masked, target_pos=target_pos, noised=noised)


def pretrain_loss(output: UniMol2Output, batch: PretrainBatch,
                  config: ObjectiveConfig) -> Dict[str, Tensor]:
    r"""The pretraining loss, in float32, with the official normalisations:

    .. math::
        \mathcal{L}_{atom} &= -\frac{1}{M}\sum_{i \in \mathcal{M}}
            \log \mathrm{softmax}(\mathbf{z}_i)_{t_i} \\
        \mathcal{L}_{coor} &= \frac{1}{B}\sum_b \frac{1}{n_b}
            \sum_{i} \lVert\hat{\mathbf{r}}_i - \mathbf{r}_i\rVert_1 \\
        \mathcal{L}_{distance} &= \frac{1}{B}\sum_b \frac{1}{n_b^2}
            \sum_{i, j} \big|\lVert\hat{\mathbf{r}}_j - \hat{\mathbf{r}}_i
            \rVert - \lVert\mathbf{r}_j - \mathbf{r}_i\rVert\big| \\
        \mathcal{L} &= w_a\mathcal{L}_{atom} + w_c\mathcal{L}_{coor}
            + w_d\mathcal{L}_{distance}

    over the :math:`M` masked atoms :math:`\mathcal{M}` (logits
    :math:`\mathbf{z}`, original tokens :math:`t`) and over all real atoms
    (pairs, diagonal included) of each of the ``B`` molecules.

    Args:
        output (UniMol2Output): model output with :obj:`logits` for the
            :obj:`batch.masked` atoms and :obj:`pos_pred`.
        batch (PretrainBatch): the targets.
        config (ObjectiveConfig): loss weights.

    Returns:
        dict: ``loss``, ``atom``, ``coord``, ``dist`` (scalars, ``loss``
        with gradient) and ``acc`` (masked-token accuracy, no gradient).
    """
    mask = batch.inputs.atom_mask.bool()
    n = mask.sum(dim=1).float()
    target = batch.target_token[batch.masked]
    logits = output.logits.float()
    nll = F.cross_entropy(logits, target, reduction='sum')
    atom = nll / max(target.numel(), 1)
    acc = (logits.argmax(dim=-1) == target).float().sum() / \
        max(target.numel(), 1)

    pred = output.pos_pred.float()
    coord_err = ((pred - batch.target_pos).abs().sum(-1) * mask).sum(1)
    coord = (coord_err / n).mean()

    pair = mask.unsqueeze(2) & mask.unsqueeze(1)
    off = pair & ~torch.eye(mask.shape[1], dtype=torch.bool,
                            device=mask.device)

    def dist(pos: Tensor) -> Tensor:
        # The diagonal is zero in both; excluding it keeps sqrt's gradient
        # finite there.
        sq = (pos.unsqueeze(1) - pos.unsqueeze(2)).square().sum(-1)
        return torch.where(off, torch.where(off, sq, 1.0).sqrt(), 0.0)

    dist_err = (dist(pred) - dist(batch.target_pos)).abs().sum((1, 2))
    distance = (dist_err / n.square()).mean()
    loss = (config.atom_weight * atom + config.coord_weight * coord +
            config.dist_weight * distance)
    return dict(loss=loss, atom=atom.detach(), coord=coord.detach(),
                dist=distance.detach(), acc=acc.detach())
