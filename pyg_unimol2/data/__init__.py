"""Molecules to PyG ``Data`` with the official Uni-Mol2 encodings."""
from .dense import DenseBatch, to_dense
from .encoding import UNREACHABLE_SPD
from .errors import (BondPerceptionError, EmbeddingError, EmptyMoleculeError,
                     FeaturizationError, GraphMatchError, InvalidSmilesError,
                     TooManyAtomsError, UnsupportedElementError)
from .featurize import (Failure, FeaturizeResult, featurize_smiles,
                        from_atoms, from_mol, from_smiles, write_failures)
from .xyz import from_xyz, mol_from_xyz

__all__ = [
    'DenseBatch', 'to_dense', 'FeaturizationError', 'InvalidSmilesError',
    'EmbeddingError', 'TooManyAtomsError', 'UnsupportedElementError',
    'EmptyMoleculeError', 'GraphMatchError', 'BondPerceptionError',
    'from_mol', 'from_smiles', 'from_atoms', 'from_xyz', 'mol_from_xyz',
    'featurize_smiles', 'FeaturizeResult', 'Failure', 'write_failures',
    'UNREACHABLE_SPD'
]
