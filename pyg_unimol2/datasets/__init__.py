"""Datasets: the Uni-Mol2 benchmarks (QM9, COMPAS-1D) in memory and the
sharded on-disk HDF5 conformer store."""
import copy
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from torch_geometric.data import Data, InMemoryDataset

from ..errors import ConfigError
from .compas1d import COMPAS1D, COMPAS1D_TARGETS
from .hdf5 import HDF5MoleculeDataset
from .qm9 import QM9, QM9_TARGETS
from .tabular import LabelledMoleculeDataset, TabularDataset
from .sdf import SDFDataset
from .xyz import XYZDataset
from .b3db import B3DB, B3DB_TASKS
from .moleculeace import MOLECULEACE_TARGETS, MoleculeACE
from .freesolv import FREESOLV_TASKS, FreeSolv

__all__ = ['QM9', 'QM9_TARGETS', 'COMPAS1D', 'COMPAS1D_TARGETS',
           'HDF5MoleculeDataset',
           'SelectTargets', 'load_property_dataset']
__all__ += ['TabularDataset', 'SDFDataset', 'XYZDataset',
            'LabelledMoleculeDataset',
            'B3DB', 'B3DB_TASKS', 'MoleculeACE', 'MOLECULEACE_TARGETS',
            'FreeSolv', 'FREESOLV_TASKS']

_TABLES = {'qm9': QM9_TARGETS, 'compas1d': COMPAS1D_TARGETS}


class SelectTargets:
    """Transform keeping the columns :obj:`index` of ``y`` (in that order)."""

    def __init__(self, index: Sequence[int]) -> None:
        self.index = list(index)

    def __call__(self, data: Data) -> Data:
        data = copy.copy(data)  # shallow: only ``y`` is replaced
        data.y = data.y[:, self.index]
        return data

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.index})'


def load_property_dataset(
        name: str, root: str, targets: Sequence[str], *,
        subset: Optional[int] = None, seed: int = 0,
        workers: Optional[int] = None, csv_path: Optional[str] = None,
        progress: bool = True
) -> Tuple[InMemoryDataset, List[str], Dict[str, str]]:
    r"""Opens (processing on first use) a benchmark dataset with ``y``
    restricted to :obj:`targets`.

    Args:
        name (str): ``'qm9'`` or ``'compas1d'``.
        root (str): cache folder; the dataset lives in ``root/<name>``.
        targets (Sequence[str]): target names, keys of
            :data:`QM9_TARGETS` / :data:`COMPAS1D_TARGETS`.
        subset (int, optional): a random subset of this many molecules,
            drawn with :obj:`seed`. (default: :obj:`None`: all)
        seed (int): subset seed. (default: :obj:`0`)
        workers (int, optional): featurization processes.
        csv_path (str, optional): COMPAS-1D CSV (else ``root/compas1d/raw/``).
        progress (bool): progress bar while processing.

    Returns:
        (dataset, target names, ``{target: unit}``); every item's ``y`` is
        ``[1, len(targets)]`` in the order of :obj:`targets`.
    """
    key = name.lower().replace('-', '')
    if key not in _TABLES:
        raise ConfigError(f'unknown dataset {name!r}; expected one of '
                          f'{sorted(_TABLES)}')
    table = _TABLES[key]
    unknown = [t for t in targets if t not in table]
    if unknown:
        raise ConfigError(f'unknown {key} targets {unknown}; available: '
                          f'{list(table)}')
    transform = SelectTargets([table[t].index for t in targets])
    subset_seed = seed if subset is not None else None
    if key == 'qm9':
        dataset = QM9(osp.join(root, 'qm9'), subset=subset,
                      subset_seed=subset_seed, workers=workers,
                      progress=progress, transform=transform)
    else:
        dataset = COMPAS1D(osp.join(root, 'compas1d'), csv_path=csv_path,
                           subset=subset, subset_seed=subset_seed,
                           workers=workers, progress=progress,
                           transform=transform)
    return dataset, list(targets), {t: table[t].unit for t in targets}
