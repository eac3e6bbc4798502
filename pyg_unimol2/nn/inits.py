"""Parameter initialisers shared by the Uni-Mol2 building blocks.

Uni-Mol2 is pretrained from scratch with ``init_bert_params`` applied to the
whole model *after* construction, which overrides every custom initialiser of
the official ``layers.py`` (``UniMol2Model.__init__``). The blocks of
:mod:`pyg_unimol2.nn` therefore use this BERT-style scheme in their default
:meth:`reset_parameters`:

* :class:`torch.nn.Linear`: weight :math:`\\sim \\mathcal{N}(0, 0.02^2)`,
  bias zero;
* :class:`torch.nn.Embedding`: weight :math:`\\sim \\mathcal{N}(0, 0.02^2)`,
  padding row zero;
* :class:`torch.nn.LayerNorm`: weight one, bias zero.
"""
import torch
from torch import nn

BERT_STD = 0.02


@torch.no_grad()
def bert_init_(module: nn.Module, std: float = BERT_STD) -> None:
    r"""Initialises a single :class:`~torch.nn.Linear`,
    :class:`~torch.nn.Embedding` or :class:`~torch.nn.LayerNorm` in place with
    the BERT scheme of the official pretraining code; other modules are left
    untouched (their own children are *not* visited)."""
    if isinstance(module, nn.Linear):
        module.weight.normal_(0.0, std)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.normal_(0.0, std)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        module.reset_parameters()


def bert_init_all_(module: nn.Module, std: float = BERT_STD) -> None:
    r"""Applies :func:`bert_init_` to :obj:`module` and all its descendants."""
    for m in module.modules():
        bert_init_(m, std)
