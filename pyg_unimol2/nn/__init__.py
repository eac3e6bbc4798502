"""Reusable building blocks of the Uni-Mol2 two-track transformer."""
from .inits import bert_init_, bert_init_all_
from .embedding import AtomEmbedding, PairEmbedding
from .kernel import GaussianKernel, NonLinear, SE3InvariantKernel
from .attention import SelfAttentionPairBias
from .outer_product import OuterProduct
from .triangular_update import TriangularUpdate
from .transition import Transition
from .block import UniMol2Block, drop_path
from .encoder import UniMol2Encoder
from .heads import (ClassificationHead, LinearHead, MaskedLMHead,
                    PositionHead, PropertyHead)
from .energy_force import DirectForceHead, EnergyHead, conservative_forces

__all__ = [
    'AtomEmbedding',
    'PairEmbedding',
    'GaussianKernel',
    'NonLinear',
    'SE3InvariantKernel',
    'SelfAttentionPairBias',
    'OuterProduct',
    'TriangularUpdate',
    'Transition',
    'UniMol2Block',
    'UniMol2Encoder',
    'PositionHead',
    'MaskedLMHead',
    'ClassificationHead',
    'PropertyHead',
    'LinearHead',
    'EnergyHead',
    'DirectForceHead',
    'conservative_forces',
    'drop_path',
    'bert_init_',
    'bert_init_all_',
]
