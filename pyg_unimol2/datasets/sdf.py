r"""A user's own labelled molecules with their own 3D conformers, from an SD
file (:class:`SDFDataset`).

Labels, the report of skipped records and bad labels, duplicate detection and
caching are those of :class:`~pyg_unimol2.datasets.tabular.TabularDataset`
(shared in :class:`~pyg_unimol2.datasets.tabular.LabelledMoleculeDataset`).
"""
import gzip
import io
import os.path as osp
from typing import (IO, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
from torch_geometric.data import Data
from tqdm import tqdm

from ..errors import InputError
from ..tasks import Task
from .tabular import LabelledMoleculeDataset, Record, resolve_column

__all__ = ['SDFDataset', 'SDF_SUFFIXES', 'read_sd_records', 'has_3d',
           'atom_map_or_reason']

#: File endings read by :class:`SDFDataset`.
SDF_SUFFIXES = ('.sdf', '.sd', '.mol', '.sdf.gz', '.sd.gz')


class SDFDataset(LabelledMoleculeDataset):
    r"""Labelled molecules from an SD file, each featurized with the
    conformer of its own record (no re-embedding).

    The file (``.sdf``, optionally gzipped) is **read in place**, with
    RDKit's ``ForwardSDMolSupplier(removeHs=False)`` so that hydrogens with
    coordinates are available; the molecule goes to
    :func:`~pyg_unimol2.data.featurize.from_mol`. Atoms keep the record's
    order: with :obj:`remove_hs` the heavy atoms in file order, else every
    atom of the record in file order followed by hydrogens that RDKit adds
    (with generated coordinates) for implicit ones. ``pos`` holds the
    file's coordinates of these atoms.

    Labels come from SD properties (``> <name>`` fields), laid out as in
    :class:`~pyg_unimol2.datasets.tabular.TabularDataset`: a molecule-level
    property holds the value; an atom-level property holds one value per
    atom **of the record**, in file order, separated by whitespace or
    ``;``. Values of removed hydrogens are dropped, added hydrogens get
    ``NaN``.

    Each item also has ``idx`` ``[1]`` (0-based record index), ``smiles``
    (canonical SMILES of the record without hydrogens, e.g. for scaffold
    splits), ``name`` (the :obj:`name_prop` property, else the record's
    title line) and ``split_tag`` (the :obj:`split_prop` property or
    ``''``).

    **Skipped records** are listed in :attr:`report` and
    ``processed/<stem>_report.csv`` with their 0-based record index
    (column ``row``) and an empty ``column``: records RDKit cannot read or
    sanitize ("unparsable record"), blank ones ("empty record"), ones that
    are not UTF-8 text ("unreadable record"), records without 3D
    coordinates ("no 3D conformer": no conformer, or every z coordinate 0
    in a block not flagged 3D or with all coordinates 0), and molecules
    :func:`~pyg_unimol2.data.featurize.from_mol` rejects. A record is what
    ends with a ``$$$$`` line (text after the last one is a record unless
    blank), so a broken record never hides the next one. Bad labels,
    duplicates, caching and :attr:`tasks` behave as in
    :class:`~pyg_unimol2.datasets.tabular.TabularDataset`.

    Args:
        root (str): folder for ``processed/``.
        path (str): the SD file.
        tasks (Sequence[Task]): the tasks; :attr:`Task.columns` are SD
            property names (matched exactly, else ignoring case).
        remove_hs (bool): drop hydrogens. (default: :obj:`True`)
        name_prop (str, optional): property stored as ``name``.
            (default: :obj:`None`: the title line, ``_Name``)
        split_prop (str, optional): property stored as ``split_tag``.
        max_atoms (int): larger molecules are skipped. (default: :obj:`256`)
        progress (bool): progress bar. (default: :obj:`True`)
        extra_cols (Dict[str, str], optional): integer properties kept as
            ``[1]`` long attributes, ``{attribute: property}``.
        transform, pre_transform, pre_filter, force_reload, log: see
            :class:`~torch_geometric.data.InMemoryDataset`.
    """

    def __init__(self, root: str, path: str,
                 tasks: Sequence[Union[Task, Dict]], *,
                 remove_hs: bool = True, name_prop: Optional[str] = None,
                 split_prop: Optional[str] = None, max_atoms: int = 256,
                 progress: bool = True,
                 extra_cols: Optional[Dict[str, str]] = None,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False, log: bool = True) -> None:
        if not str(path).lower().endswith(SDF_SUFFIXES):
            raise InputError(f'{path}: not an SD file (expected one of '
                             f'{", ".join(SDF_SUFFIXES)})')
        self.name_prop = name_prop
        self.split_prop = split_prop
        super().__init__(root, path, tasks, remove_hs=remove_hs,
                         max_atoms=max_atoms, progress=progress,
                         extra_cols=extra_cols, transform=transform,
                         pre_transform=pre_transform, pre_filter=pre_filter,
                         force_reload=force_reload, log=log)

    def _cache_options(self) -> Dict:
        return {'format': 'sdf', 'name_prop': self.name_prop,
                'split_prop': self.split_prop}

    def _read(self) -> Tuple[List[Record], List[str]]:
        source = osp.basename(self.path)
        parsed = list(read_sd_records(self.path))
        props = sorted({p for _, values, _ in parsed if values is not None
                        for p in values if p != '_Name'})

        def prop(name: str) -> str:
            return resolve_column(name, props, source, 'SD property',
                                  'SD properties')

        task_props = [prop(c) for t in self._declared for c in t.columns]
        name_prop = prop(self.name_prop) if self.name_prop else None
        split_prop = prop(self.split_prop) if self.split_prop else None
        extra = {c: prop(c) for c in self.extra_cols.values()}

        def get(values: Dict[str, str], name: Optional[str]) -> str:
            return values.get(name, '') if name else ''

        records = []
        for i, (mol, values, failure) in enumerate(parsed):
            if mol is None:
                records.append(Record(row=i, failure=failure))
                continue
            name = get(values, name_prop or '_Name')
            record = Record(
                row=i, name=name.strip(),
                split_tag=get(values, split_prop).strip(),
                cells={p: get(values, p) for p in task_props},
                extra={c: get(values, p) for c, p in extra.items()},
                payload=mol)
            if not has_3d(mol):
                record.failure = 'no 3D conformer'
            records.append(record)
        return records, task_props

    def _featurize(self, records: List[Record]):
        from rdkit import rdBase

        from ..data.featurize import from_mol
        out = []
        for record in tqdm(records, unit='mol', desc='Featurizing',
                           disable=not self.progress):
            mol = record.payload
            try:
                with rdBase.BlockLogs():
                    data = from_mol(mol, name=record.name or None,
                                    remove_hs=self.remove_hs,
                                    max_atoms=self.max_atoms)
            except Exception as e:  # FeaturizationError or RDKit errors
                out.append(str(e))
                continue
            record.smiles = data.smiles
            record.n_atoms = mol.GetNumAtoms()
            record.payload = None  # Free the molecule.
            out.append(atom_map_or_reason(
                data, [a.GetAtomicNum() for a in mol.GetAtoms()],
                self.remove_hs))
        return out

    def _atom_unit(self) -> str:
        return 'atom of the SD record, in file order'


def atom_map_or_reason(data: Data, atomic_numbers: Sequence[int],
                       remove_hs: bool
                       ) -> Union[str, Tuple[Data, List[int]]]:
    """``(data, atom map)`` of a molecule featurized from a file's atoms
    (:obj:`atomic_numbers`, in file order): for each atom of :obj:`data`,
    the index of its file atom (``-1``: a hydrogen added for an implicit
    one). With :obj:`remove_hs` these are the heavy atoms in file order,
    else every file atom followed by the added hydrogens. A reason string
    if the counts do not agree (not expected)."""
    n = len(atomic_numbers)
    if remove_hs:
        atom_map = [i for i, a in enumerate(atomic_numbers) if a != 1]
    else:
        atom_map = list(range(n)) + [-1] * (data.num_nodes - n)
    if len(atom_map) != data.num_nodes:
        return (f'atom mapping failed: {len(atom_map)} mapped atoms for '
                f'{data.num_nodes} featurized ones')
    return data, atom_map


def read_sd_records(path: str) -> Iterator[Tuple[object,
                                                 Optional[Dict[str, str]],
                                                 Optional[str]]]:
    """The records of the SD file :obj:`path` (optionally gzipped), lazily:
    ``(molecule, properties, None)`` (RDKit's
    ``ForwardSDMolSupplier(removeHs=False)``, atoms in file order;
    properties by name, the title line as ``_Name``) or ``(None, None,
    why it failed)``, one per ``$$$$``-terminated record (see
    :func:`_split_records`), RDKit's log silenced."""
    from rdkit import rdBase
    opener = gzip.open if str(path).lower().endswith('.gz') else open
    with opener(path, 'rb') as f, rdBase.BlockLogs():
        for block in _split_records(f):
            yield _parse_record(block)


def _split_records(f: IO[bytes]) -> Iterator[bytes]:
    """The records of the SD file :obj:`f` (binary), each with its
    ``$$$$`` line; text after the last ``$$$$`` is a record unless blank.

    Splitting before parsing keeps one record per ``$$$$``: RDKit's
    suppliers, after a broken record (truncated, a wrong counts line, an
    empty record), resynchronize on the ``$$$$`` of the *next* record and
    silently drop it."""
    lines = []
    for line in f:
        lines.append(line)
        if line.startswith(b'$$$$'):
            yield b''.join(lines)
            lines = []
    if any(line.strip() for line in lines):
        yield b''.join(lines)


def _parse_record(block: bytes) -> Tuple[object, Optional[Dict[str, str]],
                                         Optional[str]]:
    """``(molecule, properties, None)`` for the SD record :obj:`block`
    (properties by name, the title line as ``_Name``), or
    ``(None, None, why it failed)``."""
    from rdkit import Chem
    body = block.split(b'\n')
    if not any(line.strip() for line in body
               if not line.startswith(b'$$$$')):
        return None, None, 'empty record (no line before its $$$$)'
    supplier = Chem.ForwardSDMolSupplier(io.BytesIO(block), removeHs=False)
    mol = next(iter(supplier), None)
    if mol is None:
        return None, None, ('unparsable record (RDKit could not read or '
                            'sanitize it)')
    try:
        values = {p: mol.GetProp(p) for p in mol.GetPropNames()}
        if mol.HasProp('_Name'):
            values['_Name'] = mol.GetProp('_Name')
    except UnicodeDecodeError as e:
        return None, None, f'unreadable record (not UTF-8 text: {e})'
    return mol, values, None


def has_3d(mol) -> bool:
    """Whether :obj:`mol` has a 3D conformer: some z coordinate is not 0,
    or the block is flagged 3D and not all coordinates are 0."""
    if mol.GetNumConformers() == 0:
        return False
    conf = mol.GetConformer()
    pos = np.asarray(conf.GetPositions())
    if pos.size == 0:
        return False
    if np.any(pos[:, 2] != 0):
        return True
    return bool(conf.Is3D()) and bool(np.any(pos != 0))
