r"""Optimizer parameter groups: layer-wise learning-rate decay (JMP
fine-tuning, after BEiT / ELECTRA).

With :math:`K` encoder blocks, block :math:`k` (``encoder.layers.k``,
:math:`k = 0, \dots, K - 1`, counted from the input) learns at

.. math::
    \eta_k = \eta\,\gamma^{K - k},

the embeddings (atom, pair and 3D kernel embeddings and the encoder's
input layer norms) at :math:`\eta\,\gamma^{K + 1}`, and everything else
(the backbone's own heads and any task/energy/force heads) at
:math:`\eta`.
"""
from typing import Any, Dict, List

from torch import nn

from ..models.unimol2 import UniMol2

__all__ = ['layerwise_lr_groups']

_EMBEDDINGS = ('embed_tokens', 'atom_feature', 'edge_feature',
               'se3_invariant_kernel', 'encoder.layer_norm',
               'encoder.pair_layer_norm')


def _backbone(model: nn.Module) -> UniMol2:
    for module in model.modules():
        if isinstance(module, UniMol2):
            return module
    raise ValueError(f'{model.__class__.__name__} has no UniMol2 backbone')


def layerwise_lr_groups(model: nn.Module, lr: float,
                        decay: float) -> List[Dict[str, Any]]:
    r"""AdamW parameter groups with layer-wise decay (module docstring).

    Args:
        model (nn.Module): a :class:`~pyg_unimol2.models.UniMol2` or a
            model holding one (e.g.
            :class:`~pyg_unimol2.models.EnergyForceModel`).
        lr (float): the heads' learning rate :math:`\eta`.
        decay (float): :math:`\gamma` (``1`` disables the decay).

    Returns:
        list: non-empty groups ``{'name', 'params', 'lr'}`` (names
        ``'embeddings'``, ``'layer.<k>'``, ``'heads'``) holding every
        parameter of :obj:`model` exactly once, frozen ones included.
        Optimizer options (weight decay, ...) are the optimizer's
        defaults, e.g. ``AdamW(groups, weight_decay=0.01)``; schedulers
        such as :class:`~torch.optim.lr_scheduler.LambdaLR` scale each
        group's own rate.
    """
    backbone = _backbone(model)
    K = len(backbone.encoder.layers)
    group_of: Dict[int, str] = {}
    for prefix in _EMBEDDINGS:
        for p in backbone.get_submodule(prefix).parameters():
            group_of[id(p)] = 'embeddings'
    for k, layer in enumerate(backbone.encoder.layers):
        for p in layer.parameters():
            group_of[id(p)] = f'layer.{k}'
    scale = {'embeddings': decay**(K + 1), 'heads': 1.0}
    scale.update({f'layer.{k}': decay**(K - k) for k in range(K)})
    params: Dict[str, List[nn.Parameter]] = {name: [] for name in scale}
    for p in model.parameters():  # shared parameters are yielded once
        params[group_of.get(id(p), 'heads')].append(p)
    order = ['embeddings'] + [f'layer.{k}' for k in range(K)] + ['heads']
    return [{'name': name, 'params': params[name], 'lr': lr * scale[name]}
            for name in order if params[name]]
