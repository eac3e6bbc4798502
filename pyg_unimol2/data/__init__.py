from .dense import DenseBatch, to_dense
from .encoding import UNREACHABLE_SPD
from .errors import (EmbeddingError, EmptyMoleculeError, FeaturizationError,
                     InvalidSmilesError, TooManyAtomsError,
                     UnsupportedElementError)
from .featurize import (Failure, FeaturizeResult, featurize_smiles,
                        from_atoms, from_mol, from_smiles, write_failures)

__all__ = [
    'DenseBatch', 'to_dense', 'FeaturizationError', 'InvalidSmilesError',
    'EmbeddingError', 'TooManyAtomsError', 'UnsupportedElementError',
    'EmptyMoleculeError', 'from_mol', 'from_smiles', 'from_atoms',
    'featurize_smiles', 'FeaturizeResult', 'Failure', 'write_failures',
    'UNREACHABLE_SPD'
]
