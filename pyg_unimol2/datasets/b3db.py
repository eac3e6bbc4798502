r"""B3DB: blood-brain barrier permeability of 7,807 compounds, binary
(``BBB+`` / ``BBB-``) with a sparse regression target (``logBB``, 1,058
compounds).

Official home: https://github.com/theochem/B3DB (file
``B3DB_classification.tsv``; also shipped in the PyPI package ``qc-b3db``).
Licence: **CC0 1.0**. Cite: F. Meng, Y. Xi, J. Huang, P. W. Ayers, Sci. Data
2021, 8, 289 (doi:10.1038/s41597-021-01069-5).

The TSV has no geometries: conformers are generated from the SMILES as in
:class:`~pyg_unimol2.datasets.tabular.TabularDataset`.
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

from ..tasks import Task
from .tabular import TabularDataset

__all__ = ['B3DB', 'B3DB_TASKS', 'B3DB_URL']

B3DB_URL = 'https://github.com/theochem/B3DB'
B3DB_FILE = 'B3DB_classification.tsv'
NUM_MOLECULES = 7807

#: The default tasks: the binary label (``BBB+`` positive, index 1) and the
#: sparse ``logBB`` = log10(C_brain / C_blood) at steady state.
B3DB_TASKS: List[Task] = [
    Task(name='BBB+/BBB-', kind='classification', classes=['BBB-', 'BBB+']),
    Task(name='logBB', kind='regression', unit='log(Cbrain/Cblood)'),
]


class B3DB(TabularDataset):
    r"""B3DB classification set (``B3DB_classification.tsv``, 7,807
    compounds) featurized for Uni-Mol2.

    The file is **not downloaded and not copied**: pass :obj:`path` (the
    TSV, or the folder holding it; read in place), or put
    ``B3DB_classification.tsv`` from https://github.com/theochem/B3DB in
    ``root/raw/``. Licence CC0 1.0.

    Default tasks (:data:`B3DB_TASKS`), in the columns of ``y``:

    0. ``BBB+/BBB-``: binary, classes ``['BBB-', 'BBB+']`` (``1`` =
       ``BBB+``, crosses the barrier; 4,956 BBB+ / 2,851 BBB-);
    1. ``logBB``: regression, log10(C_brain / C_blood), labelled for 1,058
       compounds, ``NaN`` elsewhere.

    SMILES column ``SMILES``, ``name`` = ``compound_name``. Everything else
    (items, report, duplicates, caching) is as in
    :class:`~pyg_unimol2.datasets.tabular.TabularDataset`. The external set
    ``B3DB_classification_external.tsv`` (175 compounds, no ``logBB``) reads
    with ``path=`` that file and ``tasks=B3DB_TASKS[:1]``.

    Args:
        root (str): folder for ``processed/`` (and ``raw/``).
        path (str, optional): the TSV or its folder. (default:
            :obj:`None`: ``root/raw/B3DB_classification.tsv``)
        tasks (Sequence[Task], optional): (default: :data:`B3DB_TASKS`)
        **kwargs: the other arguments of
            :class:`~pyg_unimol2.datasets.tabular.TabularDataset`
            (``seed``, ``workers``, ``remove_hs``, ``progress``, ...).

    Raises:
        FileNotFoundError: no file; the message says where to download it.
    """

    default_file = B3DB_FILE
    official_url = B3DB_URL

    def __init__(self, root: str, path: Optional[str] = None, *,
                 tasks: Optional[Sequence[Union[Task, Dict]]] = None,
                 **kwargs) -> None:
        kwargs.setdefault('smiles_col', 'SMILES')
        kwargs.setdefault('name_col', 'compound_name')
        tasks = copy.deepcopy(B3DB_TASKS) if tasks is None else tasks
        super().__init__(root, path, tasks, **kwargs)
