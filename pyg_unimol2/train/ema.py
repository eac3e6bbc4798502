"""Exponential moving average (EMA) of model weights for fine-tuning.

The official Uni-Mol2 README declares ``ema_decay=0.999`` but never passes it
to the trainer (reference D.5); here it is an option of
:class:`~pyg_unimol2.train.finetune.FinetuneConfig`, off by default.
"""
from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from torch import Tensor


class ExponentialMovingAverage:
    r"""Keeps :math:`\bar{\theta} \leftarrow d\,\bar{\theta} + (1 - d)\,\theta`
    for every floating-point parameter of a model after each optimizer step.

    Args:
        model (torch.nn.Module): the model whose parameters are averaged.
        decay (float): the decay :math:`d` in :math:`[0, 1)`.
    """
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f'decay must be in [0, 1), got {decay}')
        self.model = model
        self.decay = decay
        self.shadow: Dict[str, Tensor] = {
            name: p.detach().clone()
            for name, p in model.named_parameters() if p.is_floating_point()}

    @torch.no_grad()
    def update(self) -> None:
        """Moves the average towards the current parameters."""
        for name, p in self.model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @contextmanager
    def average_parameters(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; the
        training weights are restored on exit."""
        params = dict(self.model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(decay={self.decay})'
