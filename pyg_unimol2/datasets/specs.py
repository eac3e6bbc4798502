r"""A run's datasets, described as data: :class:`DatasetSpec`, from
command-line flags or a config file (``.toml`` / ``.json``).

.. code-block:: toml

    [train]                 # FinetuneConfig fields
    preset = "tiny"
    epochs = 10
    mix = "temperature"
    temperature = 2.0

    [[datasets]]
    name = "b3db"
    builtin = "b3db"        # qm9, compas1d, b3db, moleculeace, freesolv
    path = "B3DB_classification.tsv"
    split = "scaffold"

    [[datasets]]
    name = "mine"
    path = "my_molecules.csv"   # .csv/.tsv(.gz), .sdf(.gz) or .xyz(.gz)
    smiles_col = "SMILES"
    targets = "active:classification,pIC50:regression"
    weight = 0.5

    [[datasets.tasks]]      # instead of targets: every Task field
    name = "logS"
    kind = "regression"
    loss = "l1"

A dataset is split by ``split``: ``random``, ``scaffold``,
``scaffold_similarity``, ``column`` (the values of ``split_col``:
train / valid / test) or ``kfold`` (fold ``fold`` of ``folds``).
"""
import os.path as osp
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from torch_geometric.data import Dataset

from ..config_file import read_config_file
from ..data.splits import (Split, column_split, kfold_split, make_split)
from ..errors import ConfigError, MissingFileError, UserError
from ..tasks import Task, parse_targets, task_from_dict

__all__ = ['DatasetSpec', 'open_dataset', 'read_run_config', 'make_run_split',
           'BUILTIN', 'SPLITS']

BUILTIN = ('qm9', 'compas1d', 'b3db', 'moleculeace', 'freesolv')
SPLITS = ('random', 'scaffold', 'scaffold_similarity', 'column', 'kfold')


@dataclass
class DatasetSpec:
    r"""One dataset of a run.

    Args:
        name (str): its name (heads, metrics, logs).
        builtin (str, optional): one of :data:`BUILTIN`; else a file.
        path (str, optional): the data file (for builtin datasets: the
            downloaded file, see their dataset cards).
        smiles_col (str): SMILES column of a table.
        targets (str, optional): tasks in the flag form
            ``COLUMN:KIND,...`` (:func:`~pyg_unimol2.tasks.parse_targets`);
            builtin datasets have defaults.
        tasks (List[dict]): tasks with every field (instead of targets).
        split (str): one of :data:`SPLITS`.
        split_col (str, optional): column of a ``'column'`` split (builtin
            MoleculeACE: its published ``split``).
        folds (int): folds of a ``'kfold'`` split (``unimol_tools``: 5).
        fold (int): the fold used as test part.
        split_seed (int): seed of the split.
        weight (float): loss weight of this dataset.
        subset (int, optional): a seeded random subset (QM9, COMPAS-1D).
        target (str): the MoleculeACE set, e.g. ``'CHEMBL204_Ki'``.
        max_atoms (int): the atom limit (heavy atoms): larger molecules
            are skipped, listed in the dataset's report (files, B3DB,
            FreeSolv, MoleculeACE) or counted on the console (QM9,
            COMPAS-1D).
    """
    name: str
    builtin: Optional[str] = None
    path: Optional[str] = None
    smiles_col: str = 'smiles'
    targets: Optional[str] = None
    tasks: List[Dict[str, Any]] = field(default_factory=list)
    split: str = 'random'
    split_col: Optional[str] = None
    folds: int = 5
    fold: int = 0
    split_seed: int = 0
    weight: float = 1.0
    subset: Optional[int] = None
    target: str = 'CHEMBL204_Ki'
    max_atoms: int = 256

    def __post_init__(self) -> None:
        if self.builtin is not None and self.builtin not in BUILTIN:
            raise ConfigError(f"dataset '{self.name}': unknown builtin "
                              f"'{self.builtin}' (use one of "
                              f"{', '.join(BUILTIN)}, or --data FILE for "
                              f"your own file)")
        if self.builtin is None and self.path is None:
            raise ConfigError(f"dataset '{self.name}': give a path (or a "
                              f"builtin dataset)")
        if not isinstance(self.max_atoms, int) or self.max_atoms < 1:
            raise ConfigError(f"dataset '{self.name}': max_atoms must be a "
                              f"positive integer (got {self.max_atoms!r})")
        if self.split not in SPLITS:
            raise ConfigError(f"dataset '{self.name}': unknown split "
                              f"'{self.split}' (use one of "
                              f"{', '.join(SPLITS)})")
        if self.split == 'column' and not self.split_col and \
                self.builtin != 'moleculeace':
            raise ConfigError(f"dataset '{self.name}': a column split needs "
                              f"its column (--split-col or split_col)")

    def declared_tasks(self) -> Optional[List[Task]]:
        """The tasks given in the spec (:obj:`None`: the dataset's
        defaults)."""
        if self.tasks:
            return [task_from_dict(dict(t)) for t in self.tasks]
        if self.targets:
            return parse_targets(self.targets)
        return None


def _within_atom_limit(dataset: Dataset, spec: DatasetSpec) -> Dataset:
    """:obj:`dataset` (QM9 or COMPAS-1D, featurized whole) without its
    molecules over ``spec.max_atoms`` heavy atoms, their count printed."""
    if spec.max_atoms >= DatasetSpec.max_atoms:
        return dataset
    keep = [i for i in range(len(dataset))
            if dataset[i].num_nodes <= spec.max_atoms]
    if len(keep) < len(dataset):
        print(f"dataset '{spec.name}': {len(dataset) - len(keep)} of "
              f"{len(dataset)} molecules have more than {spec.max_atoms} "
              f"heavy atoms (max_atoms) and are skipped")
        dataset = dataset.index_select(keep)
    return dataset


def spec_from_dict(entry: Dict[str, Any]) -> DatasetSpec:
    known = {f.name for f in fields(DatasetSpec)}
    unknown = set(entry) - known
    if unknown:
        raise ConfigError(f"dataset {entry.get('name', '?')!r}: unknown "
                          f"keys {sorted(unknown)} (known: "
                          f"{', '.join(sorted(known))})")
    if 'name' not in entry:
        raise ConfigError(f'a [[datasets]] entry needs a name: {entry}')
    return DatasetSpec(**entry)


def read_run_config(path: str) -> Tuple[Dict[str, Any], List[DatasetSpec]]:
    """The ``[train]`` table and the ``[[datasets]]`` of a config file;
    relative data paths are taken relative to the config file."""
    raw = read_config_file(path)
    unknown = set(raw) - {'train', 'datasets'}
    if unknown:
        raise ConfigError(f'config {path}: unknown top-level keys '
                          f'{sorted(unknown)} (use [train] and '
                          f'[[datasets]])')
    if not raw.get('datasets'):
        raise ConfigError(f'config {path}: no [[datasets]] (give each '
                          f'dataset as a [[datasets]] table)')
    if not isinstance(raw.get('train', {}), dict) or \
            not isinstance(raw['datasets'], list) or \
            not all(isinstance(e, dict) for e in raw['datasets']):
        raise ConfigError(f'config {path}: [train] must be a table and '
                          f'[[datasets]] a list of tables')
    specs = []
    for entry in raw['datasets']:
        entry = dict(entry)
        if entry.get('path') and not osp.isabs(entry['path']):
            entry['path'] = osp.join(osp.dirname(osp.abspath(path)),
                                     entry['path'])
        try:
            spec = spec_from_dict(entry)
            spec.declared_tasks()  # task mistakes named with the file
        except UserError as e:
            raise type(e)(f'config {path}: {e}') from None
        specs.append(spec)
    return dict(raw.get('train', {})), specs


def open_dataset(spec: DatasetSpec, root: str, *,
                 workers: Optional[int] = None, progress: bool = True):
    """Opens (featurizing on first use, then cached under
    ``root/<name>``) the dataset of :obj:`spec`.

    Returns:
        (dataset, List[Task]): items with ``y`` (and ``atom_y``) in the
        layout of the tasks, and the tasks (classes filled in).
    """
    from . import (B3DB, FreeSolv, MoleculeACE, SDFDataset, TabularDataset,
                   XYZDataset, load_property_dataset)
    from .files import file_kind
    from .qm9 import QM9_TARGETS
    from .compas1d import COMPAS1D_TARGETS

    tasks = spec.declared_tasks()
    folder = osp.join(root, spec.name)
    kind = spec.builtin
    if kind in ('qm9', 'compas1d'):
        table = QM9_TARGETS if kind == 'qm9' else COMPAS1D_TARGETS
        names = [t.name for t in tasks] if tasks else \
            (['homo', 'lumo', 'gap'] if kind == 'qm9' else ['aEA', 'aIP'])
        dataset, names, units = load_property_dataset(
            kind, root, names, subset=spec.subset, workers=workers,
            csv_path=spec.path, progress=progress)
        declared = {t.name: t for t in tasks or []}
        for t in declared.values():
            if t.kind != 'regression' or t.level != 'molecule':
                raise ConfigError(f"{kind} target '{t.name}' is a "
                                  f"molecule-level regression target")
        out = [declared.get(n, Task(name=n)) for n in names]
        for t in out:
            t.unit = t.unit or table[t.name].unit
        return _within_atom_limit(dataset, spec), out
    common = dict(workers=workers, progress=progress,
                  max_atoms=spec.max_atoms)
    if kind == 'b3db':
        dataset = B3DB(folder, spec.path, tasks=tasks, **common)
    elif kind == 'moleculeace':
        dataset = MoleculeACE(folder, spec.target, spec.path, tasks=tasks,
                              **common)
    elif kind == 'freesolv':
        dataset = FreeSolv(folder, spec.path, tasks=tasks, **common)
    else:
        if not osp.isfile(spec.path):
            raise MissingFileError(f"data file {spec.path}: no such file "
                                   f"(check the path given to --data or in "
                                   f"--config)")
        if not tasks:
            raise ConfigError(f"dataset '{spec.name}' ({spec.path}): give "
                              f"its targets (e.g. --targets "
                              f"'col:regression')")
        if file_kind(spec.path) == 'sdf':
            dataset = SDFDataset(folder, spec.path, tasks,
                                 split_prop=spec.split_col, progress=progress,
                                 max_atoms=spec.max_atoms)
        elif file_kind(spec.path) == 'xyz':
            dataset = XYZDataset(folder, spec.path, tasks,
                                 split_prop=spec.split_col, progress=progress,
                                 max_atoms=spec.max_atoms)
        else:
            dataset = TabularDataset(folder, spec.path, tasks,
                                     smiles_col=spec.smiles_col,
                                     split_col=spec.split_col, **common)
    return dataset, dataset.tasks


def make_run_split(spec: DatasetSpec, dataset) -> Split:
    """The split :obj:`spec` asks for, of :obj:`dataset`'s molecules."""
    smiles = [d.smiles for d in dataset]
    if spec.split == 'column':
        return column_split([d.split_tag for d in dataset],
                            seed=spec.split_seed)
    if spec.split == 'kfold':
        return kfold_split(smiles, k=spec.folds, fold=spec.fold,
                           seed=spec.split_seed)
    return make_split(spec.split, smiles, seed=spec.split_seed)
