"""Uni-Mol2 pretraining: objectives, configuration, DDP loop."""
from .config import PretrainConfig, load_config_file
from .objectives import (ObjectiveConfig, PretrainBatch, corrupt,
                         kabsch_align, pretrain_loss)
from .denoising import DenoisingRecipe, train_step, validate
from .trainer import pretrain

__all__ = ['ObjectiveConfig', 'PretrainBatch', 'corrupt', 'kabsch_align',
           'pretrain_loss', 'PretrainConfig', 'load_config_file',
           'pretrain', 'train_step', 'validate', 'DenoisingRecipe']
