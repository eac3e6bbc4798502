"""Exceptions raised when a molecule cannot be featurized.

Every exception names the molecule it refers to (a SMILES string, a file name
or a user-given identifier), so that a skipped molecule in a long job can be
found again.
"""
from ..errors import UserError


class FeaturizationError(UserError, ValueError):
    """Base class: the molecule :obj:`name` could not be featurized."""

    reason = 'featurization failed'

    def __init__(self, name: str, detail: str = '') -> None:
        self.name = name
        self.detail = detail
        msg = f'{self.reason}: {name!r}'
        super().__init__(f'{msg} ({detail})' if detail else msg)


class InvalidSmilesError(FeaturizationError):
    """RDKit could not parse or sanitize the SMILES string."""

    reason = 'unparsable SMILES'


class EmbeddingError(FeaturizationError):
    """No 3D conformer could be generated (ETKDG failed)."""

    reason = 'conformer embedding failed'


class TooManyAtomsError(FeaturizationError):
    """The molecule has more atoms than the configured limit."""

    reason = 'too many atoms'


class UnsupportedElementError(FeaturizationError):
    """The molecule contains an element outside the model's vocabulary."""

    reason = 'unsupported element'


class EmptyMoleculeError(FeaturizationError):
    """The molecule has no atom left after hydrogen removal."""

    reason = 'no atoms'


class GraphMatchError(FeaturizationError):
    """The bond graph perceived from the coordinates does not match the
    molecular graph of the template (SMILES) given for the molecule."""

    reason = 'graph does not match template'


class BondPerceptionError(FeaturizationError):
    """Bonds (connectivity or bond orders) could not be perceived from the
    coordinates alone."""

    reason = 'bond perception failed'
