r"""A user's own labelled molecules: CSV / TSV tables (:class:`TabularDataset`)
and, through the shared base :class:`LabelledMoleculeDataset`, SD files
(:class:`~pyg_unimol2.datasets.sdf.SDFDataset`).

The labels are declared as :class:`~pyg_unimol2.tasks.Task` objects and laid
out as :mod:`pyg_unimol2.tasks.task` describes: ``y`` ``[1, C]`` for the
molecule-level tasks and ``atom_y`` ``[num_atoms, C_atom]`` for the
atom-level ones (float32, ``NaN`` = missing).

Everything that does not depend on the file format lives here, once: task
preparation (class inference, the "no observed label" check), label encoding,
the report of skipped rows and bad labels, duplicate detection and the cache
key. A format only reads its records (:meth:`LabelledMoleculeDataset._read`)
and featurizes them (:meth:`LabelledMoleculeDataset._featurize`).

**Files written** in ``root/processed/`` (``<stem>`` is the file's name
without extensions followed by a 12-hex-digit key of the file content and of
every option that changes the result):

* ``<stem>.pt``: the molecules;
* ``<stem>_tasks.json``: the tasks with their inferred classes, the source
  file, its sha256 and the processing statistics, so that a reopened dataset
  has the same :attr:`~LabelledMoleculeDataset.tasks` without reprocessing;
* ``<stem>_report.csv``: ``row,smiles,column,value,reason``, one line per
  skipped row (``column`` = the SMILES column, or ``''`` for an SD record)
  and per bad label cell. ``row`` is the **0-based data-row index** (the
  first line after the header is row ``0``; blank lines are not rows) of a
  table, or the 0-based record index of an SD file;
* ``<stem>_duplicates.csv``: ``canonical_smiles,rows,column,values``, one
  line per molecule-level label column on which rows of the same molecule
  (same canonical SMILES) disagree; ``rows`` and ``values`` are
  ``;``-separated, in the same order.
"""
import copy
import csv
import gzip
import hashlib
import io
import json
import math
import os.path as osp
import re
import time
from dataclasses import dataclass, field
from typing import (Callable, Dict, Iterable, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np
import torch
from torch_geometric.data import Data, InMemoryDataset

from ..errors import InputError, MissingFileError
from ..tasks import Task, TaskError, encode_label, infer_classes, \
    label_slices, task_from_dict

__all__ = ['TabularDataset', 'LabelledMoleculeDataset', 'Record',
           'REPORT_FIELDS', 'DUPLICATE_FIELDS', 'read_table',
           'file_sha256', 'resolve_column', 'prepare_tasks',
           'split_atom_values']

_FORMAT_VERSION = 1
#: Columns of ``<stem>_report.csv``.
REPORT_FIELDS = ('row', 'smiles', 'column', 'value', 'reason')
#: Columns of ``<stem>_duplicates.csv``.
DUPLICATE_FIELDS = ('canonical_smiles', 'rows', 'column', 'values')
#: Table file endings read by :class:`TabularDataset`.
TABLE_SUFFIXES = ('.csv', '.tsv', '.txt', '.csv.gz', '.tsv.gz', '.txt.gz')
_SNIFFED = (',', '\t', ';', '|')
_ATOM_SEP = re.compile(r'[\s;]+')
_PROBE = Task(name='_probe', kind='regression')
_BINARY = {'0', '1', '0.0', '1.0'}


# --------------------------------------------------------------------------
# Module-level helpers shared by every format.
# --------------------------------------------------------------------------
def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of the file :obj:`path` (hex), read in chunks. About 0.7 s per
    GB: negligible next to featurization, and unlike size + mtime it keeps
    the cache valid when a file is copied or touched without changes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def _strip_suffixes(name: str) -> str:
    if name.endswith('.gz'):
        name = name[:-3]
    return osp.splitext(name)[0]


def _open_text(path: str) -> io.TextIOBase:
    """:obj:`path` as text (gunzipped if it ends in ``.gz``), dropping a
    UTF-8 byte-order mark."""
    if path.endswith('.gz'):
        return gzip.open(path, 'rt', encoding='utf-8-sig', newline='')
    return open(path, encoding='utf-8-sig', newline='')


def read_table(path: str, delimiter: Optional[str] = None
               ) -> Tuple[List[str], List[List[str]], str]:
    r"""Reads a CSV / TSV table, optionally gzipped, in place.

    Args:
        path (str): ``.csv``, ``.tsv`` or ``.txt``, each optionally ``.gz``.
        delimiter (str, optional): field separator. (default: :obj:`None`:
            a tab for ``.tsv``, otherwise the most frequent of ``,``, tab,
            ``;``, ``|`` in the header line, ``,`` if none occurs)

    Returns:
        (header, data rows, delimiter). Blank lines are dropped; short rows
        are padded with ``''`` and long rows cut to the header's width.

    Raises:
        InputError: unknown file ending, an empty file, one that is not
            text or a row the csv module cannot read (a ``ValueError``).
        MissingFileError: no such file (a ``FileNotFoundError``).
    """
    lower = path.lower()
    if not lower.endswith(TABLE_SUFFIXES):
        raise InputError(f'{path}: not a table file (expected one of '
                         f'{", ".join(TABLE_SUFFIXES)}; SD files are read '
                         f'by SDFDataset)')
    try:
        with _open_text(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise MissingFileError(f'{path}: no such file (check the '
                               f'path)') from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f'{path} cannot be read as a text table ({e})') \
            from None
    first = text.split('\n', 1)[0]
    if delimiter is None:
        if lower.endswith(('.tsv', '.tsv.gz')):
            delimiter = '\t'
        else:
            counts = [first.count(d) for d in _SNIFFED]
            delimiter = _SNIFFED[int(np.argmax(counts))] if max(counts) \
                else ','
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        rows = [r for r in reader if r and any(c.strip() for c in r)]
    except csv.Error as e:  # e.g. a cell over csv.field_size_limit()
        raise InputError(f'{path}: line {reader.line_num} cannot be read as '
                         f'a table row ({e}; an unbalanced quote?)') from None
    if not rows:
        raise InputError(f'{path}: empty file (expected a header row and '
                         f'one row per molecule)')
    header = [c.strip() for c in rows[0]]
    width = len(header)
    data = [(r + [''] * (width - len(r)))[:width] for r in rows[1:]]
    return header, data, delimiter


def resolve_column(name: str, available: Sequence[str], source: str,
                   what: str = 'column', plural: str = 'columns') -> str:
    r"""The entry of :obj:`available` that is :obj:`name`: matched exactly,
    else case-insensitively (ignoring surrounding spaces).

    Raises:
        TaskError: no entry (or several case-insensitive ones) match; the
            message names :obj:`source` and lists :obj:`available`.
    """
    if name in available:
        return name
    matches = [c for c in available
               if c.strip().lower() == name.strip().lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise TaskError(f"{source}: {what} '{name}' is ambiguous, it "
                        f"matches {matches} ignoring case")
    raise TaskError(f"{source}: no {what} '{name}'; the file has the "
                    f"{plural} {list(available)}")


def _is_missing(value: Optional[str]) -> bool:
    """Whether :func:`~pyg_unimol2.tasks.encode_label` reads :obj:`value`
    as a missing label (empty, ``nan``, ``NA``, ...)."""
    try:
        return math.isnan(encode_label(_PROBE, value))
    except TaskError:
        return False


def split_atom_values(cell: str) -> List[str]:
    """The per-atom values of an atom-level label cell: separated by
    whitespace or ``;``."""
    return [t for t in _ATOM_SEP.split(cell.strip()) if t]


def _encode_or_none(task: Task, value: str) -> Optional[float]:
    try:
        return encode_label(task, value)
    except TaskError:
        return None


def prepare_tasks(tasks: Sequence[Task],
                  values: Dict[str, List[str]], source: str) -> List[Task]:
    r"""Copies of :obj:`tasks` ready to encode the labels of a file.

    A classification, multi-class or multi-label task without ``classes``
    gets the classes seen in its columns
    (:func:`~pyg_unimol2.tasks.task.infer_classes`; missing markers such as
    ``''`` or ``NA`` ignored). Columns holding only ``0``/``1`` give
    ``['0', '1']`` even if one of them never occurs; the columns of a
    multi-label task share one pair of classes, ``['0', '1']`` as soon as
    one cell is ``0`` or ``1`` (other values are then bad cells).

    Args:
        tasks (Sequence[Task]): the declared tasks.
        values (Dict[str, List[str]]): every cell of every task column (the
            per-atom values of atom-level columns), keyed by column name.
        source (str): file name for messages.

    Raises:
        TaskError: classes cannot be inferred (e.g. a binary task with three
            values, or a single class), or a task has no observed label in
            the whole file.
    """
    out = []
    for task in tasks:
        task = copy.deepcopy(task)
        cells = [v.strip() for c in task.columns for v in values[c]
                 if not _is_missing(v)]
        if task.kind != 'regression' and task.classes is None:
            distinct = set(cells)
            binary = distinct & _BINARY
            if task.kind != 'multiclass' and binary and (
                    distinct <= _BINARY or task.kind == 'multilabel'):
                # 0/1 columns; for multi-label columns other values are
                # then bad cells.
                classes = ['0', '1']
            else:
                proxy = task if task.kind != 'multilabel' else \
                    Task(name=task.name, kind='classification')
                try:
                    classes = infer_classes(proxy, cells)
                except TaskError as e:
                    raise TaskError(f'{source}: {e}') from None
            if len(classes) < 2 and cells:
                raise TaskError(
                    f"task '{task.name}': only the class {classes} occurs "
                    f"in column(s) {task.columns} of {source}; declare the "
                    f"task's classes")
            task.classes = classes
        if not any(_encode_or_none(task, v) is not None for v in cells):
            raise TaskError(f"task '{task.name}': no observed label in "
                            f"column(s) {task.columns} of {source}")
        out.append(task)
    return out


@dataclass
class Record:
    """One row of a table or one record of an SD file, before
    featurization.

    Attributes:
        row (int): 0-based data-row / record index.
        smiles (str): the molecule's SMILES ('' until known for SD files).
        name (str): identifier ('' if none).
        split_tag (str): value of the split column ('' if none).
        cells (Dict[str, str]): the raw label cells, by column.
        extra (Dict[str, str]): raw cells of the extra integer columns.
        failure (str, optional): why the record cannot be used (set by the
            reader, e.g. an unparsable SD record).
        payload: format-specific object (the RDKit molecule of an SD
            record).
        n_atoms (int, optional): number of values an atom-level cell holds
            (:obj:`None`: one per atom of the featurized molecule).
    """
    row: int
    smiles: str = ''
    name: str = ''
    split_tag: str = ''
    cells: Dict[str, str] = field(default_factory=dict)
    extra: Dict[str, str] = field(default_factory=dict)
    failure: Optional[str] = None
    payload: object = None
    n_atoms: Optional[int] = None


# --------------------------------------------------------------------------
# Shared base class.
# --------------------------------------------------------------------------
class LabelledMoleculeDataset(InMemoryDataset):
    r"""Base of the labelled-file datasets: tasks, labels, report,
    duplicates and caching. Subclasses implement :meth:`_read`,
    :meth:`_featurize` and :meth:`_cache_options`.

    Attributes (after construction):
        tasks (List[Task]): the tasks, with inferred classes filled in.
        report (List[dict]): the lines of ``<stem>_report.csv``
            (``row`` an int).
        duplicates (List[dict]): the lines of ``<stem>_duplicates.csv``
            (``rows`` a list of ints, ``values`` a list of strings).
        processing_stats (dict): counts and seconds of the processing run.
    """

    #: File name looked up in ``root/raw/`` (or in a folder given as
    #: ``path``) when no file is given; ``None``: a path is required.
    default_file: Optional[str] = None
    #: Where to download :attr:`default_file` (named in the error).
    official_url: Optional[str] = None

    def __init__(self, root: str, path: Optional[str],
                 tasks: Sequence[Union[Task, Dict]], *,
                 remove_hs: bool = True, max_atoms: int = 256,
                 progress: bool = True,
                 extra_cols: Optional[Dict[str, str]] = None,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False, log: bool = True) -> None:
        self.path = self._resolve_path(root, path)
        self._declared = self._check_tasks(tasks)
        self.remove_hs = remove_hs
        self.max_atoms = max_atoms
        self.progress = progress
        self.extra_cols = dict(extra_cols or {})
        self.sha256 = file_sha256(self.path)
        self._stem = self._make_stem()
        self._tasks: List[Task] = [copy.deepcopy(t) for t in self._declared]
        self.report: List[Dict] = []
        self.duplicates: List[Dict] = []
        self.processing_stats: Dict = {}
        super().__init__(root, transform, pre_transform, pre_filter,
                         log=log, force_reload=force_reload)
        self.load(self.processed_paths[0])
        self._load_side_files()

    # ---------------------------------------------------------------- setup
    def _resolve_path(self, root: str, path: Optional[str]) -> str:
        name = self.default_file
        where = None
        if path is None and name is not None:
            where = osp.join(osp.expanduser(root), 'raw', name)
        elif path is None:
            raise TypeError(f'{type(self).__name__}: pass the path of the '
                            f'file to read')
        else:
            where = osp.expanduser(str(path))
            if osp.isdir(where) and name is not None:
                where = osp.join(where, name)
        if not osp.isfile(where):
            msg = f'{type(self).__name__}: file not found: {where}'
            if self.official_url:
                msg += (f'. Download {name} from {self.official_url}, then '
                        f'pass path=FILE (unimol2 finetune: --csv FILE; '
                        f'read in place, never copied) or save it as '
                        f'{osp.join(root, "raw", name)}.')
            else:
                msg += ' (check the path)'
            raise MissingFileError(msg)
        return osp.abspath(where)

    @staticmethod
    def _check_tasks(tasks: Sequence[Union[Task, Dict]]) -> List[Task]:
        if isinstance(tasks, (Task, dict)):
            tasks = [tasks]
        out = [copy.deepcopy(t) if isinstance(t, Task) else task_from_dict(t)
               for t in tasks]
        if not out:
            raise TaskError('no tasks given')
        names = [t.name for t in out]
        if len(set(names)) != len(names):
            raise TaskError(f'duplicate task names in {names}')
        return out

    def _cache_options(self) -> Dict:
        """Options (besides the file, the tasks and ``remove_hs`` /
        ``max_atoms``) that change the processed result."""
        return {}

    def _make_stem(self) -> str:
        key = json.dumps({
            'version': _FORMAT_VERSION, 'class': 'labelled',
            'sha256': self.sha256, 'remove_hs': self.remove_hs,
            'max_atoms': self.max_atoms, 'extra_cols': self.extra_cols,
            'tasks': [t.to_dict() for t in self._declared],
            'options': self._cache_options()}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return f'{_strip_suffixes(osp.basename(self.path))}_{digest}'

    # ---------------------------------------------------------------- files
    @property
    def raw_file_names(self) -> List[str]:
        return []

    @property
    def processed_file_names(self) -> List[str]:
        s = self._stem
        return [f'{s}.pt', f'{s}_tasks.json', f'{s}_report.csv',
                f'{s}_duplicates.csv']

    @property
    def tasks_path(self) -> str:
        """JSON file with the tasks (inferred classes included)."""
        return self.processed_paths[1]

    @property
    def report_path(self) -> str:
        """CSV of the skipped rows and bad label cells."""
        return self.processed_paths[2]

    @property
    def duplicates_path(self) -> str:
        """CSV of the duplicate molecules with conflicting labels."""
        return self.processed_paths[3]

    @property
    def tasks(self) -> List[Task]:
        """The tasks, with the classes inferred from the file filled in."""
        return [copy.deepcopy(t) for t in self._tasks]

    @property
    def atom_tasks(self) -> List[Task]:
        return [t for t in self._tasks if t.level == 'atom']

    def download(self) -> None:  # The file is read in place.
        pass

    def _load_side_files(self) -> None:
        with open(self.tasks_path) as f:
            meta = json.load(f)
        self._tasks = [task_from_dict(t) for t in meta['tasks']]
        self.processing_stats = meta.get('stats', {})
        with open(self.report_path, newline='') as f:
            self.report = [dict(r, row=int(r['row']))
                           for r in csv.DictReader(f)]
        with open(self.duplicates_path, newline='') as f:
            self.duplicates = [
                dict(r, rows=[int(i) for i in r['rows'].split(';')],
                     values=r['values'].split(';'))
                for r in csv.DictReader(f)]

    # ---------------------------------------------------- format interface
    def _read(self) -> Tuple[List[Record], List[str]]:
        """All records of the file (failed ones with ``failure`` set), and
        the task columns resolved to the file's own names (one per entry
        of ``[c for t in tasks for c in t.columns]``); task columns are
        resolved with :func:`resolve_column`."""
        raise NotImplementedError

    def _featurize(self, records: List[Record]
                   ) -> List[Union[str, Tuple[Data, Optional[List[int]]]]]:
        """For each record (those the reader did not mark as failed), the
        featurized molecule with its atom map, or
        the reason it failed. The atom map gives, for each atom of the
        molecule, the index of its value in an atom-level cell (``-1``: no
        value); :obj:`None` means one value per atom of the molecule, in
        its order."""
        raise NotImplementedError

    def _canonical(self, record: Record, data: Data) -> str:
        """Canonical SMILES of a featurized record (duplicate key)."""
        return data.smiles

    @staticmethod
    def _n_atom_values(record: Record, data: Data) -> int:
        """Number of values an atom-level cell of :obj:`record` holds."""
        return data.num_nodes if record.n_atoms is None else record.n_atoms

    # ---------------------------------------------------------- processing
    def process(self) -> None:
        t0 = time.perf_counter()
        source = osp.basename(self.path)
        records, columns = self._read()
        # Map declared task columns to the file's column names.
        tasks = [copy.deepcopy(t) for t in self._declared]
        it = iter(columns)
        col_of: Dict[Tuple[str, str], str] = {}
        for t in tasks:
            for c in t.columns:
                col_of[(t.name, c)] = next(it)
        values: Dict[str, List[str]] = {}
        for t in tasks:
            for c in t.columns:
                cells = [r.cells.get(col_of[(t.name, c)], '') for r in
                         records if r.failure is None]
                if t.level == 'atom':
                    cells = [v for cell in cells
                             for v in split_atom_values(cell)]
                values[c] = cells
        tasks = prepare_tasks(tasks, values, source)
        self._tasks = tasks

        report: List[Dict] = []
        todo = [r for r in records if r.failure is None]
        done = iter(self._featurize(todo))
        outputs = [r.failure if r.failure is not None else next(done)
                   for r in records]
        slices = label_slices(tasks)
        mol_tasks = [t for t in tasks if t.level == 'molecule']
        atom_tasks = [t for t in tasks if t.level == 'atom']
        n_mol = sum(t.width for t in mol_tasks)
        n_atom = sum(t.width for t in atom_tasks)
        kept: List[Tuple[Record, Data]] = []
        n_skipped = n_bad = 0
        for record, out in zip(records, outputs):
            if isinstance(out, str):
                n_skipped += 1
                column = self._smiles_column()
                report.append(dict(row=record.row, smiles=record.smiles,
                                   column=column,
                                   value=record.smiles if column else '',
                                   reason=out))
                continue
            data, atom_map = out
            y = torch.full((1, n_mol), math.nan)
            bad = []
            for t in mol_tasks:
                cols = slices[t.name][1]
                for k, c in enumerate(t.columns):
                    cell = record.cells.get(col_of[(t.name, c)], '')
                    try:
                        y[0, cols.start + k] = encode_label(t, cell)
                    except TaskError as e:
                        bad.append((col_of[(t.name, c)], cell, str(e)))
            if atom_tasks:
                n = data.num_nodes
                n_values = self._n_atom_values(record, data)
                index = np.arange(n) if atom_map is None else \
                    np.asarray(atom_map, np.int64)
                atom_y = torch.full((n, n_atom), math.nan)
                for t in atom_tasks:
                    cols = slices[t.name][1]
                    for k, c in enumerate(t.columns):
                        column = col_of[(t.name, c)]
                        cell = record.cells.get(column, '')
                        if _is_missing(cell):
                            continue
                        tokens = split_atom_values(cell)
                        if len(tokens) != n_values:
                            bad.append((column, cell, (
                                f'expected {n_values} atom values (one per '
                                f'{self._atom_unit()}), got {len(tokens)}')))
                            continue
                        try:
                            vals = np.asarray([encode_label(t, v)
                                               for v in tokens], np.float32)
                        except TaskError as e:
                            bad.append((column, cell, f'atom value {e}'))
                            continue
                        vals = np.append(vals, np.float32(math.nan))
                        atom_y[:, cols.start + k] = torch.from_numpy(
                            vals[index])  # index -1 -> the NaN appended
                data.atom_y = atom_y
            for column, cell, reason in bad:
                report.append(dict(row=record.row, smiles=record.smiles,
                                   column=column, value=cell, reason=reason))
            n_bad += len(bad)
            data.y = y
            data.idx = torch.tensor([record.row], dtype=torch.long)
            data.name = record.name
            data.split_tag = record.split_tag
            for attr, column in self.extra_cols.items():
                cell = record.extra.get(column, '').strip()
                try:
                    value = int(float(cell))
                    if not -2 ** 63 <= value < 2 ** 63:  # torch.long
                        raise OverflowError
                except (ValueError, OverflowError):  # OverflowError: inf
                    value = -1
                    report.append(dict(row=record.row, smiles=record.smiles,
                                       column=column, value=cell,
                                       reason=f"'{cell}' is not an integer"))
                setattr(data, attr, torch.tensor([value], dtype=torch.long))
            kept.append((record, data))

        duplicates = self._find_duplicates(kept, mol_tasks, slices, col_of)
        data_list = []
        for _, data in kept:
            if self.pre_filter is not None and not self.pre_filter(data):
                continue
            if self.pre_transform is not None:
                data = self.pre_transform(data)
            data_list.append(data)
        report.sort(key=lambda r: r['row'])
        self._write_csv(self.report_path, REPORT_FIELDS, report)
        self._write_csv(self.duplicates_path, DUPLICATE_FIELDS, [
            dict(d, rows=';'.join(map(str, d['rows'])),
                 values=';'.join(d['values'])) for d in duplicates])
        if not data_list:
            raise InputError(f'{source}: no molecule could be featurized '
                             f'(see {self.report_path})')
        self.save(data_list, self.processed_paths[0])
        seconds = time.perf_counter() - t0
        stats = {'rows': len(records), 'molecules': len(data_list),
                 'skipped': n_skipped, 'bad_labels': n_bad,
                 'duplicate_conflicts': len(duplicates),
                 'total_s': round(seconds, 3)}
        with open(self.tasks_path, 'w') as f:
            json.dump({'tasks': [t.to_dict() for t in tasks],
                       'source': self.path, 'sha256': self.sha256,
                       'stats': stats}, f, indent=1)
        self.processing_stats = stats
        if self.log:
            print(f'{type(self).__name__} {source}: {len(data_list)} of '
                  f'{len(records)} molecules kept in {seconds:.1f} s; '
                  f'{n_skipped} skipped, {n_bad} bad labels (report: '
                  f'{self.report_path})')
            if duplicates:
                print(f'Warning: {len(duplicates)} conflicting labels '
                      f'between duplicate molecules (same canonical SMILES; '
                      f'all rows kept), see {self.duplicates_path}')

    def _smiles_column(self) -> str:
        """``column`` of a skipped row in the report."""
        return ''

    def _atom_unit(self) -> str:
        return 'atom of the featurized molecule'

    def _find_duplicates(self, kept: List[Tuple[Record, Data]],
                         mol_tasks: List[Task], slices, col_of
                         ) -> List[Dict]:
        """Molecules (same canonical SMILES) whose rows carry different
        observed values in a molecule-level label column. Atom-level labels
        are not compared (two SMILES of one molecule number its atoms
        differently)."""
        groups: Dict[str, List[Tuple[Record, Data]]] = {}
        for record, data in kept:
            groups.setdefault(self._canonical(record, data), []).append(
                (record, data))
        out = []
        for key, members in groups.items():
            if len(members) < 2:
                continue
            for t in mol_tasks:
                for k, c in enumerate(t.columns):
                    j = slices[t.name][1].start + k
                    seen = [(r, d.y[0, j].item()) for r, d in members
                            if not math.isnan(d.y[0, j].item())]
                    if len({v for _, v in seen}) > 1:
                        column = col_of[(t.name, c)]
                        out.append(dict(
                            canonical_smiles=key,
                            rows=[r.row for r, _ in seen], column=column,
                            values=[r.cells.get(column, '').strip()
                                    for r, _ in seen]))
        return out

    @staticmethod
    def _write_csv(path: str, fields: Sequence[str],
                   rows: Iterable[Dict]) -> None:
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(rows)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({osp.basename(self.path)}, '
                f'{len(self)}, tasks={[t.name for t in self._tasks]})')


# --------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------
class TabularDataset(LabelledMoleculeDataset):
    r"""Labelled molecules from a CSV / TSV table of SMILES, featurized for
    Uni-Mol2.

    The file (``.csv``, ``.tsv``, ``.txt``, optionally gzipped; a UTF-8
    byte-order mark is ignored) is **read in place, never copied**. Each row
    is one molecule: a SMILES column and one column per label
    (:attr:`Task.columns <pyg_unimol2.tasks.Task.columns>`). Conformers are
    generated by :func:`~pyg_unimol2.data.featurize.featurize_smiles`
    (ETKDGv3 seeded with :obj:`seed`, MMFF94), in worker processes with a
    progress bar.

    Each item is a :class:`~torch_geometric.data.Data` with the Uni-Mol2
    features and

    * ``y`` ``[1, C]`` float32: the molecule-level labels in the order of
      :func:`~pyg_unimol2.tasks.label_slices` (numbers in the file's
      units, binary ``0``/``1`` with the second class positive, class
      indices), ``NaN`` where missing;
    * ``atom_y`` ``[num_atoms, C_atom]`` float32, only if some task has
      ``level='atom'``: its cell holds one number per atom of the
      featurized molecule, separated by whitespace or ``;`` (heavy atoms in
      the SMILES' atom order when :obj:`remove_hs`, else every atom of
      ``Chem.AddHs(mol)``: heavy atoms first, then the hydrogens); rows
      ``NaN`` when the cell is empty;
    * ``idx`` ``[1]`` long: the 0-based data row; ``smiles``: the file's
      SMILES (surrounding spaces stripped); ``name``: the :obj:`name_col`
      cell or ``''``; ``split_tag``: the :obj:`split_col` cell or ``''``;
      one ``[1]`` long attribute per entry of :obj:`extra_cols`.

    **Errors.** A row whose SMILES cannot be featurized is skipped; a bad
    label cell (not a number, not one of the classes, wrong number of atom
    values) becomes ``NaN`` and the rest of the row is kept. Both are listed
    in :attr:`report` and ``processed/<stem>_report.csv``
    (``row,smiles,column,value,reason``; ``row`` is the 0-based data-row
    index) and counted in a one-line summary. Rows of the same molecule
    (canonical SMILES) with different observed labels are all kept and
    listed in :attr:`duplicates` / ``processed/<stem>_duplicates.csv``
    (``canonical_smiles,rows,column,values``) with a warning.

    **Caching.** ``processed/<stem>.pt`` (``<stem>`` = file name +
    key of the file's sha256, the columns, the tasks, :obj:`seed`,
    :obj:`remove_hs`, :obj:`optimize`, :obj:`max_atoms`) is reused when it
    exists; ``<stem>_tasks.json`` restores :attr:`tasks` (with inferred
    classes) without reprocessing.

    Args:
        root (str): folder for ``processed/`` (and ``raw/``).
        path (str): the table (a folder holding :attr:`default_file` for the
            benchmark subclasses).
        tasks (Sequence[Task]): the tasks (or their config-file dicts).
            Classification tasks without ``classes`` get those seen in the
            whole column (:func:`~pyg_unimol2.tasks.task.infer_classes`).
        smiles_col (str): SMILES column, matched exactly, else ignoring
            case. (default: :obj:`'smiles'`)
        split_col (str, optional): column stored as ``split_tag``.
        name_col (str, optional): column stored as ``name``.
        delimiter (str, optional): field separator. (default: a tab for
            ``.tsv``, else sniffed from the header line)
        remove_hs (bool): drop hydrogens. (default: :obj:`True`)
        seed (int): ETKDG seed of every molecule. (default: :obj:`0`)
        optimize (bool): MMFF94-optimize the conformers.
            (default: :obj:`True`)
        max_atoms (int): larger molecules are skipped. (default: :obj:`256`)
        workers (int, optional): featurization processes.
            (default: :obj:`None`: all CPUs)
        progress (bool): progress bar. (default: :obj:`True`)
        extra_cols (Dict[str, str], optional): integer columns kept as
            ``[1]`` long attributes, ``{attribute: column}`` (``-1`` and a
            report line when a cell is not an integer).
        transform, pre_transform, pre_filter, force_reload, log: see
            :class:`~torch_geometric.data.InMemoryDataset`.

    Raises:
        FileNotFoundError: no such file.
        TaskError: a missing SMILES / task / split / name column (the
            message names the file and lists its columns), classes that
            cannot be inferred, or a task without any observed label.
    """

    def __init__(self, root: str, path: Optional[str],
                 tasks: Sequence[Union[Task, Dict]], *,
                 smiles_col: str = 'smiles', split_col: Optional[str] = None,
                 name_col: Optional[str] = None,
                 delimiter: Optional[str] = None, remove_hs: bool = True,
                 seed: int = 0, optimize: bool = True, max_atoms: int = 256,
                 workers: Optional[int] = None, progress: bool = True,
                 extra_cols: Optional[Dict[str, str]] = None,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False, log: bool = True) -> None:
        self.smiles_col = smiles_col
        self.split_col = split_col
        self.name_col = name_col
        self.delimiter = delimiter
        self.seed = seed
        self.optimize = optimize
        self.workers = workers
        self._resolved_smiles_col = smiles_col
        super().__init__(root, path, tasks, remove_hs=remove_hs,
                         max_atoms=max_atoms, progress=progress,
                         extra_cols=extra_cols, transform=transform,
                         pre_transform=pre_transform, pre_filter=pre_filter,
                         force_reload=force_reload, log=log)

    def _cache_options(self) -> Dict:
        return {'format': 'table', 'smiles_col': self.smiles_col,
                'split_col': self.split_col, 'name_col': self.name_col,
                'delimiter': self.delimiter, 'seed': self.seed,
                'optimize': self.optimize}

    def _read(self) -> Tuple[List[Record], List[str]]:
        header, rows, _ = read_table(self.path, self.delimiter)
        source = osp.basename(self.path)

        def column(name: str, what: str = 'column') -> int:
            return header.index(resolve_column(name, header, source, what))

        smiles = column(self.smiles_col, 'SMILES column')
        self._resolved_smiles_col = header[smiles]
        task_cols = [column(c) for t in self._declared for c in t.columns]
        split = column(self.split_col) if self.split_col else None
        name = column(self.name_col) if self.name_col else None
        extra = {c: column(c) for c in self.extra_cols.values()}
        records = []
        for i, row in enumerate(rows):
            records.append(Record(
                row=i, smiles=row[smiles].strip(),
                name='' if name is None else row[name].strip(),
                split_tag='' if split is None else row[split].strip(),
                cells={header[j]: row[j] for j in task_cols},
                extra={c: row[j] for c, j in extra.items()}))
        return records, [header[j] for j in task_cols]

    def _featurize(self, records: List[Record]):
        from rdkit import Chem, rdBase

        from ..data.featurize import featurize_smiles
        result = featurize_smiles([r.smiles for r in records],
                                  workers=self.workers, seed=self.seed,
                                  progress=self.progress,
                                  remove_hs=self.remove_hs,
                                  max_atoms=self.max_atoms,
                                  optimize=self.optimize)
        out: List = [None] * len(records)
        for fail in result.failures:
            out[fail.index] = fail.reason
        with rdBase.BlockLogs():
            for i, data in zip(result.indices, result.data):
                mol = Chem.MolFromSmiles(records[i].smiles)
                records[i].payload = Chem.MolToSmiles(mol) if mol else \
                    records[i].smiles
                data.smiles = records[i].smiles
                out[i] = (data, None)
        return out

    def _canonical(self, record: Record, data: Data) -> str:
        return record.payload

    def _smiles_column(self) -> str:
        return self._resolved_smiles_col
