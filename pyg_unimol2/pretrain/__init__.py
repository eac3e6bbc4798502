"""Uni-Mol2 pretraining: objectives, configuration, DDP loop."""
from .config import PretrainConfig, load_config_file
from .objectives import (ObjectiveConfig, PretrainBatch, corrupt,
                         kabsch_align, pretrain_loss)
from .trainer import pretrain, train_step, validate

__all__ = ['ObjectiveConfig', 'PretrainBatch', 'corrupt', 'kabsch_align',
           'pretrain_loss', 'PretrainConfig', 'load_config_file',
           'pretrain', 'train_step', 'validate']
