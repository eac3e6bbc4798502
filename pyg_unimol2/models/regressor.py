"""Uni-Mol2 with a property head on the molecule (CLS) representation."""
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch

from ..data.dense import DenseBatch
from ..nn.heads import ClassificationHead
from .official import read_official_state_dict
from .unimol2 import UniMol2


class UniMol2Regressor(torch.nn.Module):
    r"""Multi-target property regression with a Uni-Mol2 backbone.

    The CLS representation feeds the official fine-tuning head
    (:class:`~pyg_unimol2.nn.heads.ClassificationHead`, dense + tanh + linear).
    Targets are standardised with the training-set statistics stored in the
    buffers :obj:`mean` and :obj:`std`:

    .. math::
        \hat{y} = \mu + \sigma \odot \mathrm{head}(\mathbf{x}_{\mathrm{CLS}})

    Args:
        backbone (UniMol2): the encoder.
        target_names (Sequence[str]): one name per output.
        pooler_dropout (float, optional): head dropout. (default: :obj:`0.0`)
    """
    def __init__(self, backbone: UniMol2, target_names: Sequence[str],
                 pooler_dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.target_names = list(target_names)
        dim = backbone.config.embed_dim
        self.head = ClassificationHead(dim, dim, len(self.target_names),
                                       pooler_dropout)
        self.register_buffer('mean', torch.zeros(len(self.target_names)))
        self.register_buffer('std', torch.ones(len(self.target_names)))

    def set_target_stats(self, mean: Tensor, std: Tensor) -> None:
        """Stores the training-set target statistics (``[T]`` each)."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-12))

    def forward(self, batch: Union[Batch, DenseBatch]) -> Tensor:
        """Standardised predictions ``[B, T]``."""
        return self.head(self.backbone(batch, compute_pos=False).cls)

    @torch.no_grad()
    def predict(self, batch: Union[Batch, DenseBatch]) -> Tensor:
        """Predictions in the units of the targets, ``[B, T]``."""
        return self.forward(batch) * self.std + self.mean

    def standardize(self, y: Tensor) -> Tensor:
        """Maps targets ``[B, T]`` to standardised units."""
        return (y - self.mean) / self.std

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.backbone.config.name}, '
                f'targets={self.target_names})')


def build_regressor(preset: str, target_names: Sequence[str],
                    pooler_dropout: float = 0.0,
                    **overrides) -> UniMol2Regressor:
    """A :class:`UniMol2Regressor` with a fresh backbone of the given preset."""
    backbone = UniMol2.from_preset(preset, lm_head=False, **overrides)
    return UniMol2Regressor(backbone, target_names, pooler_dropout)


def load_regressor(checkpoint: Union[str, dict],
                   map_location: Optional[str] = 'cpu') -> UniMol2Regressor:
    """Rebuilds a :class:`UniMol2Regressor` from a fine-tuning checkpoint."""
    if not isinstance(checkpoint, dict):
        checkpoint = torch.load(checkpoint, map_location=map_location,
                                weights_only=False)
    backbone = UniMol2(checkpoint['model_config'])
    model = UniMol2Regressor(backbone, checkpoint['target_names'],
                             checkpoint.get('pooler_dropout', 0.0))
    model.load_state_dict(checkpoint['model'])
    return model


def load_backbone_weights(model: UniMol2Regressor,
                          checkpoint: Union[str, dict]) -> None:
    """Initialises :obj:`model.backbone` from a checkpoint: one of ours
    (fine-tuning, with ``backbone.*`` keys, or a bare :class:`UniMol2` state
    dict) or an official one (its ``model`` entry; parameter names equal the
    official implementation's). Keys of other heads are ignored.

    Raises:
        ValueError: no backbone parameter of the checkpoint matches, a
            matching name has a different shape (another preset), or a
            backbone tensor is missing.
    """
    state = read_official_state_dict(checkpoint)
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items()
                 if k.startswith('backbone.')}
    own = model.backbone.state_dict()
    matched = {k: v for k, v in state.items() if k in own}
    if not matched:
        raise ValueError('no backbone parameter found in the checkpoint')
    wrong = [k for k, v in matched.items() if v.shape != own[k].shape]
    if wrong:
        raise ValueError(f'shape mismatch for {wrong[:5]} (another preset?)')
    missing = sorted(set(own) - set(matched))
    if missing:
        raise ValueError(f'the checkpoint lacks backbone tensors '
                         f'{missing[:5]} (of {len(missing)})')
    model.backbone.load_state_dict(matched, strict=False)
    print(f'pretrained: loaded {len(matched)}/{len(own)} backbone tensors')
