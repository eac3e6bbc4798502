r"""The Uni-Mol2 model: embeddings, two-track encoder and heads.

`"Uni-Mol2: Exploring Molecular Pretraining Model at Scale"
<https://arxiv.org/abs/2406.14969>`_.

The sub-module names equal those of the official implementation
(deepmodeling/Uni-Mol, ``unimol2/``), so an official ``state_dict`` loads
without renaming (see :meth:`UniMol2.state_dict` keys such as
``encoder.layers.0.opm.linear_in.weight``). Only the fine-tuning heads of
unimol_tools (``classification_head.out_proj``) need a rename.

Deliberate difference from the official code: the outer-product and
triangle normalisations use each molecule's own token count instead of the
padded length, so a molecule's outputs do not depend on what it is batched
with. Set :obj:`UniMol2Config.padded_norm` to reproduce the official
(padding-dependent) numbers.
"""
import copy
from dataclasses import asdict, dataclass, replace
from typing import Dict, Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ..data.dense import DenseBatch, to_dense
from ..nn import (AtomEmbedding, ClassificationHead, MaskedLMHead,
                  PairEmbedding, PositionHead, SE3InvariantKernel,
                  UniMol2Encoder, bert_init_)
from ..nn._utils import safe_norm

PADDING_IDX = 0
MASK_IDX = 127


@dataclass
class UniMol2Config:
    r"""Hyper-parameters of :class:`UniMol2`. Defaults are the official
    base model (``unimol2_84M``); see :data:`PRESETS`.

    Args:
        num_layers (int): number of two-track blocks.
        embed_dim (int): atom size :math:`E`.
        num_heads (int): attention heads :math:`H` (head size :math:`E/H`).
        pair_dim (int): pair size :math:`P`.
        pair_hidden_dim (int): outer-product / triangle size :math:`h`.
        ffn_dim (int): atom FFN hidden size; as in the official code it is
            rounded down to a multiple of :obj:`embed_dim`.
        num_kernels (int): Gaussian kernels :math:`K`.
        dropout (float): residual dropout.
        attention_dropout (float): attention-weight dropout.
        activation_dropout (float): dropout inside the FFNs.
        pair_dropout (float): row-shared dropout of the triangle update.
        droppath_prob (float): maximal stochastic-depth rate (replaces the
            residual dropout when positive).
        position_dropout (float): attention dropout of the position head.
        pooler_dropout (float): dropout of the classification heads.
        token_vocab_size (int): atom token vocabulary (0 = pad, 127 = mask).
        atom_feat_vocab_size (int): atom feature code vocabulary.
        degree_vocab_size (int): degree code vocabulary.
        edge_vocab_size (int): bond code vocabulary.
        spd_vocab_size (int): shortest-path code vocabulary.
        pair_type_vocab_size (int): atom-pair type code vocabulary.
        gaussian_start (float): first Gaussian mean (Angstrom).
        gaussian_stop (float): last Gaussian mean (Angstrom).
        gaussian_std_width (float): Gaussian width in mean spacings.
        lm_head (bool): build the masked-atom head (the nominal official
            sizes include it).
        padded_norm (bool): normalise the outer product / triangle update by
            the padded token count like the official code (outputs then
            depend on the batch) instead of each molecule's own count.
        chunk_size (int, optional): row-chunk size of the pair track.
        checkpointing (bool): activation checkpointing per block in training.
        name (str): preset name, informative only.
    """
    num_layers: int = 12
    embed_dim: int = 768
    num_heads: int = 48
    pair_dim: int = 512
    pair_hidden_dim: int = 64
    ffn_dim: int = 768
    num_kernels: int = 128
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    pair_dropout: float = 0.25
    droppath_prob: float = 0.0
    position_dropout: float = 0.1
    pooler_dropout: float = 0.0
    token_vocab_size: int = 128
    atom_feat_vocab_size: int = 512
    degree_vocab_size: int = 128
    edge_vocab_size: int = 64
    spd_vocab_size: int = 512
    pair_type_vocab_size: int = 512
    gaussian_start: float = 0.0
    gaussian_stop: float = 9.0
    gaussian_std_width: float = 1.0
    lm_head: bool = True
    padded_norm: bool = False
    chunk_size: Optional[int] = None
    checkpointing: bool = False
    name: str = 'custom'

    def __post_init__(self):
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(f"'embed_dim' ({self.embed_dim}) must be "
                             f"divisible by 'num_heads' ({self.num_heads})")
        if self.ffn_dim < self.embed_dim:
            raise ValueError(f"'ffn_dim' ({self.ffn_dim}) must be at least "
                             f"'embed_dim' ({self.embed_dim})")

    @property
    def ffn_hidden_dim(self) -> int:
        r"""Actual FFN width ``E * (ffn_dim // E)`` (official rounding)."""
        return self.embed_dim * (self.ffn_dim // self.embed_dim)

    def to_dict(self) -> dict:
        return asdict(self)


def _preset(name: str, layers: int, embed_dim: int, heads: int,
            pair_dim: int = 512, pair_hidden_dim: int = 64) -> UniMol2Config:
    return UniMol2Config(name=name, num_layers=layers, embed_dim=embed_dim,
                         num_heads=heads, pair_dim=pair_dim,
                         pair_hidden_dim=pair_hidden_dim, ffn_dim=embed_dim)


#: Model sizes. The six paper presets follow Table 2 of the paper and the
#: official ``register_model_architecture`` entries (head size 16,
#: :math:`P = 512`, :math:`h = 64`, FFN width :math:`E`). ``'tiny'`` (0.8M
#: parameters) and ``'small'`` (3.2M) are CPU-sized members of the same
#: family: like the paper presets they share one pair track
#: (:math:`P = 64`, :math:`h = 16`) and scale depth and :math:`E`.
#: ``'80K'``, ``'180K'``, ``'420K'`` and ``'2M'`` fill in the CPU range for
#: the scaling study (``benchmarks/results/scaling.md``); below ``'tiny'``
#: the pair track narrows too.
PRESETS: Dict[str, UniMol2Config] = {
    '80K': _preset('80K', 2, 32, 2, pair_dim=16, pair_hidden_dim=8),
    '180K': _preset('180K', 2, 64, 4, pair_dim=32, pair_hidden_dim=8),
    '420K': _preset('420K', 4, 96, 6, pair_dim=32, pair_hidden_dim=8),
    'tiny': _preset('tiny', 4, 128, 8, pair_dim=64, pair_hidden_dim=16),
    '2M': _preset('2M', 6, 192, 12, pair_dim=64, pair_hidden_dim=16),
    'small': _preset('small', 6, 256, 16, pair_dim=64, pair_hidden_dim=16),
    '42M': _preset('42M', 6, 768, 48),
    '84M': _preset('84M', 12, 768, 48),
    '164M': _preset('164M', 24, 768, 48),
    '310M': _preset('310M', 32, 1024, 64),
    '570M': _preset('570M', 32, 1536, 96),
    '1.1B': _preset('1.1B', 64, 1536, 96),
}


@dataclass
class UniMol2Output:
    r"""Outputs of :class:`UniMol2`.

    Attributes:
        cls (Tensor): CLS representation ``[B, E]``.
        atoms (Tensor): atom representations ``[B, L, E]`` (CLS excluded).
        pair (Tensor): pair representation ``[B, N, N, P]``, ``N = L + 1``,
            CLS at index 0; zero for pairs with a padded atom (the encoder
            never computes them, see :class:`~pyg_unimol2.nn.UniMol2Encoder`).
        pos_pred (Tensor, optional): predicted coordinates ``[B, L, 3]``
            (:obj:`None` with ``compute_pos=False``).
        atom_mask (BoolTensor): real atoms ``[B, L]``.
        logits (Tensor, optional): masked-atom logits ``[M, 128]`` for the
            :obj:`masked_tokens` rows, if requested.
    """
    cls: Tensor
    atoms: Tensor
    pair: Tensor
    pos_pred: Optional[Tensor]
    atom_mask: Tensor
    logits: Optional[Tensor] = None


class UniMol2(nn.Module):
    r"""The Uni-Mol2 two-track (atom + pair) molecular transformer from
    `"Uni-Mol2: Exploring Molecular Pretraining Model at Scale"
    <https://arxiv.org/abs/2406.14969>`_:

    .. math::
        \mathbf{x}^0, \mathbf{p}^0 &= \mathrm{AtomEmb}(\cdot),\;
        \mathrm{PairEmb}(\cdot) + \psi(\lVert\mathbf{r}_j -
        \mathbf{r}_i\rVert) \\
        \mathbf{x}, \mathbf{p} &= \mathrm{Encoder}(\mathbf{x}^0,
        \mathbf{p}^0) \\
        \hat{\mathbf{r}}_i &= \mathbf{r}_i +
        \mathrm{PositionHead}(\mathbf{x}, \mathbf{p}, \mathbf{r})_i

    The CLS / virtual node sits at token index 0. All outputs are invariant
    to rotations and translations of the input coordinates except
    :obj:`pos_pred`, which is equivariant, and they are independent of the
    padding (see :attr:`UniMol2Config.padded_norm`). The representations
    are differentiable w.r.t. :obj:`batch.pos` through the distances
    :math:`\lVert\mathbf{r}_j - \mathbf{r}_i\rVert` of the Gaussian
    kernel (energies and conservative forces, see
    :class:`~pyg_unimol2.models.EnergyForceModel`); the position head gets
    the offsets detached, as in the official denoising objective.

    Initialisation (:meth:`reset_parameters`) follows the official
    from-scratch pretraining: ``init_bert_params`` everywhere
    (:math:`\mathcal{N}(0, 0.02^2)` weights, zero biases, zero padding
    rows, unit layer norms; this includes the Gaussian ``mul``/``bias``
    tables), the ``lm_head.weight`` with PyTorch's kaiming-uniform default,
    and the classification heads with PyTorch defaults.

    Args:
        config (UniMol2Config or dict, optional): hyper-parameters (a dict
            as produced by :func:`dataclasses.asdict` is accepted); the
            official 84M base model if :obj:`None`.
        **kwargs: overrides of :obj:`config` fields.
    """
    def __init__(self, config: Union[UniMol2Config, dict, None] = None,
                 **kwargs):
        super().__init__()
        if isinstance(config, dict):
            config = UniMol2Config(**config)
        config = copy.deepcopy(config or UniMol2Config())
        if kwargs:
            config = replace(config, **kwargs)
        self.config = c = config

        self.embed_tokens = nn.Embedding(c.token_vocab_size, c.embed_dim,
                                         padding_idx=PADDING_IDX)
        self.atom_feature = AtomEmbedding(c.embed_dim, c.atom_feat_vocab_size,
                                          c.degree_vocab_size)
        self.edge_feature = PairEmbedding(c.pair_dim, c.edge_vocab_size,
                                          c.spd_vocab_size)
        self.encoder = UniMol2Encoder(
            c.num_layers, c.embed_dim, c.pair_dim, c.pair_hidden_dim,
            c.num_heads, ffn_dim=c.ffn_hidden_dim, dropout=c.dropout,
            attention_dropout=c.attention_dropout,
            activation_dropout=c.activation_dropout,
            pair_dropout=c.pair_dropout, droppath_prob=c.droppath_prob,
            chunk_size=c.chunk_size, checkpointing=c.checkpointing)
        self.lm_head = (MaskedLMHead(c.embed_dim, c.token_vocab_size)
                        if c.lm_head else None)
        self.se3_invariant_kernel = SE3InvariantKernel(
            c.pair_dim, c.num_kernels, c.pair_type_vocab_size,
            c.gaussian_start, c.gaussian_stop, c.gaussian_std_width)
        self.movement_pred_head = PositionHead(c.embed_dim, c.pair_dim,
                                               c.num_heads,
                                               dropout=c.position_dropout)
        self.classification_heads = nn.ModuleDict()
        self.reset_parameters()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> 'UniMol2':
        r"""Builds a model from a :data:`PRESETS` entry, e.g.
        ``UniMol2.from_preset('84M', dropout=0.0)``."""
        if name not in PRESETS:
            raise KeyError(f"Unknown preset '{name}' "
                           f"(available: {', '.join(PRESETS)})")
        return cls(PRESETS[name], **overrides)

    @classmethod
    def from_official(cls, source, strict: bool = True,
                      **overrides) -> 'UniMol2':
        r"""Loads an official Uni-Mol2 checkpoint (the official training
        code's or unimol_tools', a path or a loaded object), reading the
        architecture from its tensor shapes; see
        :func:`~pyg_unimol2.models.official.load_official`, which also
        returns a report, and :meth:`to_official` for the reverse."""
        from .official import load_official
        return load_official(source, strict, **overrides)[0]

    @classmethod
    def from_pretrained(cls, name: str, heads: bool = False,
                        **overrides) -> 'UniMol2':
        r"""The official pretrained Uni-Mol2 of a size (``'84M'``,
        ``'164M'``, ``'310M'``, ``'570M'``, ``'1.1B'``) or of
        ``OWNER/REPO/FILE`` on the Hugging Face Hub, downloaded once into
        the Hugging Face cache (or ``UNIMOL2_WEIGHT_DIR``), e.g.
        ``UniMol2.from_pretrained('84M').eval()``; or a small backbone
        shipped with the package (``'small-moses'``, offline; see
        :mod:`pyg_unimol2.checkpoints.bundled`); see
        :mod:`pyg_unimol2.checkpoints.hub`.

        Args:
            name (str): a size, a shipped name or ``OWNER/REPO/FILE``.
            heads (bool, optional): keep the masked-atom head of the
                pretraining checkpoint. (default: :obj:`False`)
            **overrides: non-architecture :class:`UniMol2Config` fields
                (dropout rates, ``chunk_size``, ``checkpointing``).
        """
        from ..checkpoints.formats import load_backbone
        from ..checkpoints.hub import download_weights
        return load_backbone(download_weights(name), heads=heads, **overrides)

    def to_official(self, layout: str = 'unicore') -> Dict[str, Tensor]:
        r"""This model's state dict in an official layout (``'unicore'`` or
        ``'unimol_tools'``); see
        :func:`~pyg_unimol2.models.official.to_official_state_dict`."""
        from .official import to_official_state_dict
        return to_official_state_dict(self, layout)

    def reset_parameters(self) -> None:
        r"""Official from-scratch init (see the class docstring)."""
        bert_init_(self.embed_tokens)
        self.atom_feature.reset_parameters()
        self.edge_feature.reset_parameters()
        self.encoder.reset_parameters()
        self.se3_invariant_kernel.reset_parameters()
        self.movement_pred_head.reset_parameters()
        if self.lm_head is not None:
            self.lm_head.reset_parameters()
        for head in self.classification_heads.values():
            head.reset_parameters()

    def register_classification_head(
            self, name: str, num_classes: int,
            inner_dim: Optional[int] = None) -> ClassificationHead:
        r"""Adds a dense+tanh head on the CLS representation under
        ``classification_heads.<name>`` (official naming) and returns it."""
        head = ClassificationHead(self.config.embed_dim,
                                  inner_dim or self.config.embed_dim,
                                  num_classes,
                                  dropout=self.config.pooler_dropout)
        head.to(self.embed_tokens.weight.device)
        self.classification_heads[name] = head
        return head

    def num_parameters(self, trainable_only: bool = False) -> int:
        r"""Number of parameters (shared ones counted once)."""
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    def forward(self, batch: Union[Batch, Data, DenseBatch],
                masked_tokens: Optional[Tensor] = None,
                compute_pos: bool = True) -> UniMol2Output:
        r"""
        Args:
            batch (Batch or DenseBatch): featurized molecules; a PyG
                :class:`~torch_geometric.data.Batch` is converted with
                :func:`~pyg_unimol2.data.to_dense`.
            masked_tokens (BoolTensor, optional): atoms ``[B, L]`` for which
                the masked-atom logits are computed (needs the ``lm_head``).
            compute_pos (bool, optional): run the position head; if
                :obj:`False` (e.g. property fine-tuning, where it gets no
                gradient) :obj:`pos_pred` is :obj:`None`.
                (default: :obj:`True`)

        Returns:
            UniMol2Output: see :class:`UniMol2Output`.
        """
        if not isinstance(batch, DenseBatch):
            batch = to_dense(batch)
        atom_mask = batch.atom_mask.bool()
        B, L = atom_mask.shape
        mask = torch.cat([atom_mask.new_ones(B, 1), atom_mask], dim=1)

        x = self.atom_feature(batch.atom_feat, batch.degree,
                              self.embed_tokens(batch.token))

        pos = batch.pos
        delta = pos.unsqueeze(1) - pos.unsqueeze(2)  # r_j - r_i
        # Float32 distances (float64 in a float64 model), differentiable
        # w.r.t. pos with zero (not NaN) gradients at i = j and padding.
        dtype = torch.promote_types(self.embed_tokens.weight.dtype,
                                    torch.float32)
        dist = safe_norm(delta.to(dtype))
        pair = self.edge_feature(
            batch.spd, batch.pair_feat,
            self.se3_invariant_kernel(dist, batch.pair_type))

        num_tokens = None
        if self.config.padded_norm:
            num_tokens = torch.full((B, ), L + 1, device=x.device)
        x, pair = self.encoder(x, pair, mask, num_tokens)

        atoms = x[:, 1:]
        pos_pred = None
        if compute_pos:
            # Denoising sees fixed (detached) offsets, as the official head.
            disp = self.movement_pred_head(atoms, pair, delta.detach(),
                                           atom_mask)
            pos_pred = pos + disp.to(pos.dtype)
        logits = None
        if masked_tokens is not None:
            if self.lm_head is None:
                raise ValueError("'masked_tokens' given but the model has "
                                 "no 'lm_head' (set 'lm_head=True')")
            logits = self.lm_head(atoms, masked_tokens.bool())
        return UniMol2Output(cls=x[:, 0], atoms=atoms, pair=pair,
                             pos_pred=pos_pred,
                             atom_mask=atom_mask, logits=logits)

    def __repr__(self) -> str:
        c = self.config
        return (f'{self.__class__.__name__}(num_layers={c.num_layers}, '
                f'embed_dim={c.embed_dim}, heads={c.num_heads}, '
                f'pair_dim={c.pair_dim}, '
                f'pair_hidden_dim={c.pair_hidden_dim})')
