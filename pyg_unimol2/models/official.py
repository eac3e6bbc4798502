r"""Official Uni-Mol2 checkpoints: import into :class:`UniMol2` and export
back to the official layout.

Two official layouts exist:

* ``'unicore'``: the checkpoints of the official training code
  (deepmodeling/Uni-Mol, ``unimol2/``), a Uni-Core checkpoint whose
  ``'model'`` entry holds the state dict. Pretraining checkpoints hold the
  masked-atom head ``lm_head.*``; fine-tuned ones hold dense + tanh heads
  ``classification_heads.<name>.*``.
* ``'unimol_tools'``: :class:`unimol_tools.models.unimolv2.UniMolV2Model`,
  which has no ``lm_head`` and one head ``classification_head.*``: a single
  linear layer (``out_proj``), or dense + tanh when a ``dense`` layer is
  present.

The backbone tensors have the same names in both layouts and in
:class:`UniMol2`. The unimol_tools head becomes the head
:data:`UNIMOL_TOOLS_HEAD` in :attr:`UniMol2.classification_heads`.
"""
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch
from torch import Tensor

from ..nn.heads import ClassificationHead, LinearHead
from .unimol2 import PRESETS, UniMol2, UniMol2Config

#: Name of the unimol_tools ``classification_head`` inside
#: :attr:`UniMol2.classification_heads`.
UNIMOL_TOOLS_HEAD = 'unimol_tools'
LAYOUTS = ('unicore', 'unimol_tools')
_UT_PREFIX = 'classification_head.'
_HEADS = re.compile(r'^classification_heads\.([^.]+)\.')

StateDict = Dict[str, Tensor]


@dataclass
class OfficialLoadReport:
    r"""What :func:`load_official` did with the official tensors.

    Attributes:
        layout (str): detected layout, ``'unicore'`` or ``'unimol_tools'``.
        config (UniMol2Config): architecture read from the tensor shapes.
        heads (List[str]): classification heads created, by name.
        ignored (List[str]): official keys not used (only with
            ``strict=False``).
    """
    layout: str
    config: UniMol2Config
    heads: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)


def read_official_state_dict(source: Union[str, Path, dict]) -> StateDict:
    r"""The model tensors of an official checkpoint (a path or an already
    loaded object): the ``'model'`` / ``'model_state_dict'`` entry of a
    checkpoint, or a bare state dict. A ``'module.'`` prefix (DDP) is
    stripped."""
    if not isinstance(source, dict):
        source = torch.load(source, map_location='cpu', weights_only=False)
    for key in ('model', 'model_state_dict', 'state_dict'):
        if isinstance(source.get(key), dict):
            source = source[key]
            break
    state = {}
    for key, value in source.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"checkpoint entry '{key}' is a "
                            f"{type(value).__name__}, not a tensor: not a "
                            f"Uni-Mol2 state dict")
        state[key[len('module.'):] if key.startswith('module.') else key] = \
            value
    return state


def official_config(state: StateDict, **overrides) -> UniMol2Config:
    r"""The :class:`UniMol2Config` of an official state dict, read from the
    tensor shapes (layers, sizes, heads, vocabularies, Gaussian means). The
    Gaussian width is not stored in checkpoints; it is the official 1.0.
    Dropout rates are the official defaults unless overridden."""
    def shape(key: str) -> torch.Size:
        if key not in state:
            raise KeyError(f"'{key}' missing: not a Uni-Mol2 state dict")
        return state[key].shape

    layers = {int(m.group(1)) for k in state
              if (m := re.match(r'encoder\.layers\.(\d+)\.', k))}
    if not layers:
        raise KeyError("no 'encoder.layers.*' tensors: not a Uni-Mol2 "
                       "state dict")
    layer = 'encoder.layers.0.'
    mean = state.get('se3_invariant_kernel.gaussian.mean')
    arch = dict(
        num_layers=max(layers) + 1,
        embed_dim=shape('embed_tokens.weight')[1],
        num_heads=shape(layer + 'self_attn.linear_bias.weight')[0],
        pair_dim=shape('edge_feature.vnode_virtual_distance.weight')[1],
        pair_hidden_dim=shape(layer + 'opm.linear_in.weight')[0] // 2,
        ffn_dim=shape(layer + 'ffn.linear_1.weight')[0],
        num_kernels=shape('se3_invariant_kernel.out_proj.layer1.weight')[1],
        token_vocab_size=shape('embed_tokens.weight')[0],
        atom_feat_vocab_size=shape('atom_feature.atom_encoder.weight')[0],
        degree_vocab_size=shape('atom_feature.degree_encoder.weight')[0],
        edge_vocab_size=shape('edge_feature.edge_encoder.weight')[0],
        spd_vocab_size=shape('edge_feature.shorest_path_encoder.weight')[0],
        pair_type_vocab_size=shape(
            'se3_invariant_kernel.gaussian.mul.weight')[0],
        lm_head='lm_head.weight' in state,
    )
    if mean is not None and not mean.is_meta:
        arch.update(gaussian_start=float(mean[0]),
                    gaussian_stop=float(mean[-1]))
    name = next((n for n, p in PRESETS.items()
                 if all(getattr(p, k) == arch[k]
                        for k in ('num_layers', 'embed_dim', 'num_heads',
                                  'pair_dim', 'pair_hidden_dim', 'ffn_dim'))),
                'custom')
    known = {f.name for f in fields(UniMol2Config)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f'unknown UniMol2Config fields: {sorted(unknown)}')
    return UniMol2Config(**{**arch, 'name': name, **overrides})


def _split_heads(state: StateDict) -> Tuple[StateDict, Dict[str, StateDict],
                                            str]:
    """Backbone tensors, head tensors by head name, and the layout."""
    backbone, heads = {}, {}
    layout = 'unicore'
    for key, value in state.items():
        if key.startswith(_UT_PREFIX):
            layout = 'unimol_tools'
            heads.setdefault(UNIMOL_TOOLS_HEAD, {})[
                key[len(_UT_PREFIX):]] = value
        elif (m := _HEADS.match(key)):
            heads.setdefault(m.group(1), {})[key[m.end():]] = value
        else:
            backbone[key] = value
    if 'lm_head.weight' not in state and layout == 'unicore' and not heads:
        layout = 'unimol_tools'  # UT backbone without its head
    return backbone, heads, layout


def _build_head(name: str, tensors: StateDict, dropout: float):
    if 'out_proj.weight' not in tensors:
        raise KeyError(f"classification head '{name}' has no "
                       f"'out_proj.weight' (keys: {sorted(tensors)})")
    classes, inner = tensors['out_proj.weight'].shape
    if 'dense.weight' in tensors:
        in_dim = tensors['dense.weight'].shape[1]
        return ClassificationHead(in_dim, inner, classes, dropout)
    return LinearHead(inner, classes, dropout)


def load_official(source: Union[str, Path, dict], strict: bool = True,
                  **overrides) -> Tuple[UniMol2, OfficialLoadReport]:
    r"""Builds a :class:`UniMol2` from an official checkpoint.

    The architecture is read from the tensor shapes
    (:func:`official_config`); every official tensor is loaded. Heads are
    recreated: Uni-Core ``classification_heads.<name>`` as
    :class:`~pyg_unimol2.nn.heads.ClassificationHead`, the unimol_tools
    ``classification_head`` as head :data:`UNIMOL_TOOLS_HEAD`.

    Args:
        source (str, Path or dict): checkpoint path or loaded object.
        strict (bool, optional): raise if an official tensor is unused or a
            model tensor is missing; with :obj:`False` unused keys are
            listed in the report instead. (default: :obj:`True`)
        **overrides: :class:`UniMol2Config` fields to set (e.g. dropout
            rates, ``chunk_size``, ``checkpointing``); architecture fields
            must agree with the checkpoint.

    Returns:
        (UniMol2, OfficialLoadReport)
    """
    state = read_official_state_dict(source)
    config = official_config(state, **overrides)
    model = UniMol2(config)
    backbone, heads, layout = _split_heads(state)
    for name, tensors in heads.items():
        model.classification_heads[name] = _build_head(
            name, tensors, config.pooler_dropout)
        backbone.update({f'classification_heads.{name}.{k}': v
                         for k, v in tensors.items()})
    expected = model.state_dict()
    ignored = sorted(set(backbone) - set(expected))
    missing = sorted(set(expected) - set(backbone))
    mismatched = sorted(k for k in set(backbone) & set(expected)
                        if backbone[k].shape != expected[k].shape)
    if mismatched:
        raise ValueError('official tensors with shapes that do not match '
                         'the architecture: ' + ', '.join(
                             f'{k} {tuple(backbone[k].shape)} vs '
                             f'{tuple(expected[k].shape)}'
                             for k in mismatched))
    if missing or (strict and ignored):
        raise KeyError(f'official checkpoint does not match UniMol2: '
                       f'missing {missing}, unexpected {ignored}')
    model.load_state_dict({k: v for k, v in backbone.items()
                           if k in expected})
    return model, OfficialLoadReport(layout, config, sorted(heads), ignored)


def to_official_state_dict(model: UniMol2,
                           layout: str = 'unicore') -> StateDict:
    r"""The state dict of :obj:`model` in an official layout.

    ``'unicore'``: the names of the official training code (all heads kept).
    ``'unimol_tools'``: no ``lm_head``; the head :data:`UNIMOL_TOOLS_HEAD`
    (if any) becomes ``classification_head``; other heads raise, as
    unimol_tools has only one.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}' (use one of {LAYOUTS})")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if layout == 'unicore':
        return state
    others = set(model.classification_heads) - {UNIMOL_TOOLS_HEAD}
    if others:
        raise ValueError(f"unimol_tools holds a single head "
                         f"'{UNIMOL_TOOLS_HEAD}'; the model also has "
                         f'{sorted(others)}')
    prefix = f'classification_heads.{UNIMOL_TOOLS_HEAD}.'
    return {(_UT_PREFIX + k[len(prefix):] if k.startswith(prefix) else k): v
            for k, v in state.items() if not k.startswith('lm_head.')}


def save_official(model: UniMol2, path: Union[str, Path],
                  layout: str = 'unicore') -> None:
    r"""Writes ``{'model': state_dict}`` in an official layout (loadable by
    the official code and by ``unimol_tools``' ``pretrained_model_path``)."""
    torch.save({'model': to_official_state_dict(model, layout)}, path)
