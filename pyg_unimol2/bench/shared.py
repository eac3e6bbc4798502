"""Where the benchmark and dataset scripts and the tests find the shared
datasets."""
import os
from pathlib import Path

#: The source checkout the scripts run from (an editable install).
CHECKOUT = Path(__file__).resolve().parents[2]


def shared_datasets() -> Path:
    r"""The folder of the shared datasets (COMPAS-1D, MOSES, B3DB,
    MoleculeACE, FreeSolv): ``$UNIMOL2_SHARED/datasets``, by default
    ``../shared/datasets`` beside the checkout, where the tests look too."""
    shared = os.environ.get('UNIMOL2_SHARED', CHECKOUT.parent / 'shared')
    return Path(shared) / 'datasets'


def moses_test() -> Path:
    r"""The MOSES test SMILES (``moses/test.csv.gz``)."""
    return shared_datasets() / 'moses' / 'test.csv.gz'
