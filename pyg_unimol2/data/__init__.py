from .dense import DenseBatch, to_dense
from .errors import (EmbeddingError, EmptyMoleculeError, FeaturizationError,
                     InvalidSmilesError, TooManyAtomsError,
                     UnsupportedElementError)

__all__ = [
    'DenseBatch', 'to_dense', 'FeaturizationError', 'InvalidSmilesError',
    'EmbeddingError', 'TooManyAtomsError', 'UnsupportedElementError',
    'EmptyMoleculeError'
]
