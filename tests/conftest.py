import gzip
import os
from pathlib import Path
from typing import List

import pytest
import torch

# pytest-xdist runs one worker per core: one thread each avoids
# oversubscribing the cores (OpenMP threads then wait on each other).
torch.set_num_threads(1)

#: ``shared/`` sits beside the repository (override with UNIMOL2_SHARED).
SHARED = Path(os.environ.get(
    'UNIMOL2_SHARED', Path(__file__).resolve().parents[2] / 'shared'))
MOSES_TEST = SHARED / 'datasets' / 'moses' / 'test.csv.gz'
COMPAS_CSV = SHARED / 'datasets' / 'compas-1d' / 'compas-1D_b3lyp-d3bj_def2-svp.csv'


def read_moses(count: int, path: Path = MOSES_TEST) -> List[str]:
    """The first :obj:`count` SMILES of a MOSES split."""
    with gzip.open(path, 'rt') as f:
        next(f)
        return [next(f).strip() for _ in range(count)]


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f'shared data folder not found at {SHARED}')
    return SHARED
