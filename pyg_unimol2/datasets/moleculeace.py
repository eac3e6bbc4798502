r"""MoleculeACE: 30 ChEMBL bioactivity regression sets with activity-cliff
annotations and a published cliff-stratified train/test split.

Official home: https://github.com/molML/MoleculeACE (folder
``MoleculeACE/Data/benchmark_data/``; also shipped in the PyPI package
``MoleculeACE``). Licence: MIT (code and files); the activities come from
ChEMBL (CC BY-SA 3.0). Cite: D. van Tilborg, A. Alenicheva, F. Grisoni,
J. Chem. Inf. Model. 2022, 62, 5938-5951 (doi:10.1021/acs.jcim.2c01073).
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

from ..errors import ConfigError
from ..tasks import Task
from .tabular import TabularDataset

__all__ = ['MoleculeACE', 'MOLECULEACE_TARGETS', 'MOLECULEACE_TASKS',
           'MOLECULEACE_URL']

MOLECULEACE_URL = 'https://github.com/molML/MoleculeACE'

#: The 30 data sets (``<ChEMBL target id>_<Ki|EC50>``), one file
#: ``<name>.csv`` each.
MOLECULEACE_TARGETS: List[str] = [
    'CHEMBL1862_Ki', 'CHEMBL1871_Ki', 'CHEMBL2034_Ki', 'CHEMBL2047_EC50',
    'CHEMBL204_Ki', 'CHEMBL2147_Ki', 'CHEMBL214_Ki', 'CHEMBL218_EC50',
    'CHEMBL219_Ki', 'CHEMBL228_Ki', 'CHEMBL231_Ki', 'CHEMBL233_Ki',
    'CHEMBL234_Ki', 'CHEMBL235_EC50', 'CHEMBL236_Ki', 'CHEMBL237_EC50',
    'CHEMBL237_Ki', 'CHEMBL238_Ki', 'CHEMBL239_EC50', 'CHEMBL244_Ki',
    'CHEMBL262_Ki', 'CHEMBL264_Ki', 'CHEMBL2835_Ki', 'CHEMBL287_Ki',
    'CHEMBL2971_Ki', 'CHEMBL3979_EC50', 'CHEMBL4005_Ki', 'CHEMBL4203_Ki',
    'CHEMBL4616_EC50', 'CHEMBL4792_Ki',
]

#: ``y`` = -log10(activity / nM) = pKi - 9 (or pEC50 - 9): higher is more
#: active.
MOLECULEACE_TASKS: List[Task] = [
    Task(name='y', kind='regression', unit='log10(1/nM)'),
]


class MoleculeACE(TabularDataset):
    r"""One MoleculeACE data set (``<target>.csv``) featurized for
    Uni-Mol2.

    The file is **not downloaded and not copied**: pass :obj:`path` (the
    CSV, or the folder holding the 30 files; read in place), or put
    ``<target>.csv`` from https://github.com/molML/MoleculeACE
    (``MoleculeACE/Data/benchmark_data/``) in ``root/raw/``. Several targets
    can share one :obj:`root` (the processed files are named after the
    target).

    Default task (:data:`MOLECULEACE_TASKS`): ``y`` = -log10(activity in
    nM), i.e. pKi - 9 or pEC50 - 9 (higher = more active; 6.0 nM gives
    -0.778). Each item also has ``split_tag`` ``'train'`` / ``'test'`` (the
    published split, stratified by activity cliffs) and ``cliff`` ``[1]``
    long (``cliff_mol``: 1 if the molecule takes part in an activity cliff).

    Args:
        root (str): folder for ``processed/`` (and ``raw/``).
        target (str): one of :data:`MOLECULEACE_TARGETS`.
            (default: :obj:`'CHEMBL204_Ki'`, thrombin)
        path (str, optional): the CSV or its folder. (default:
            :obj:`None`: ``root/raw/<target>.csv``)
        tasks (Sequence[Task], optional): (default:
            :data:`MOLECULEACE_TASKS`)
        **kwargs: the other arguments of
            :class:`~pyg_unimol2.datasets.tabular.TabularDataset`.

    Raises:
        ValueError: unknown :obj:`target`.
        FileNotFoundError: no file; the message says where to download it.
    """

    official_url = MOLECULEACE_URL

    def __init__(self, root: str, target: str = 'CHEMBL204_Ki',
                 path: Optional[str] = None, *,
                 tasks: Optional[Sequence[Union[Task, Dict]]] = None,
                 **kwargs) -> None:
        if target not in MOLECULEACE_TARGETS:
            raise ConfigError(f'unknown MoleculeACE target {target!r}; '
                              f'expected one of {MOLECULEACE_TARGETS}')
        self.target = target
        self.default_file = f'{target}.csv'
        kwargs.setdefault('smiles_col', 'smiles')
        kwargs.setdefault('split_col', 'split')
        kwargs.setdefault('extra_cols', {'cliff': 'cliff_mol'})
        tasks = copy.deepcopy(MOLECULEACE_TASKS) if tasks is None else tasks
        super().__init__(root, path, tasks, **kwargs)
