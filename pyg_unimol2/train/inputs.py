r"""The molecules of an input file of ``unimol2 predict`` and ``unimol2
embed``, featurized, whatever the file's kind
(:func:`~pyg_unimol2.datasets.files.file_kind`):

* SMILES lists (``.smi``/``.txt``, gzipped too; the first field of a line
  is the SMILES, the rest of the line its name) and tables
  (``.csv``/``.tsv``, gzipped too; a SMILES column): conformers are
  generated (ETKDGv3 + MMFF94, seeded, in worker processes);
* SD files: each record's own conformer, its atoms in file order
  (:func:`~pyg_unimol2.datasets.sdf.read_sd_records`, records without 3D
  coordinates skipped);
* XYZ files (plain or extended, one or several frames): each frame's own
  coordinates, atoms in file order
  (:func:`~pyg_unimol2.data.xyz.from_xyz_frame`).

**The atom limit.** A molecule with more than ``max_atoms`` heavy atoms is
skipped and reported, or, with ``crop``, randomly cropped to ``max_atoms``
atoms as ``unimol_tools`` does (:func:`~pyg_unimol2.data.crop.crop_atoms`,
seeded by ``seed``) and listed in :attr:`MoleculeInputs.cropped`. With
``crop``, molecules up to :data:`CROP_INPUT_ATOMS` heavy atoms are
featurized (the pair features grow with the square of the atom count).

**Conformers.** :func:`conformer_views` gives ``K`` conformers per molecule
of a SMILES input for test-time averaging, as fine-tuning evaluation does
(:func:`~pyg_unimol2.train.conformers.build_conformers`): conformer 0 is the
molecule read, the others are embedded with the next ETKDG seeds
(:func:`conformer_seeds`), and one that cannot be embedded is replaced by
conformer 0.
"""
import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Callable, Iterator, List, NamedTuple, Optional, Tuple,
                    Union)

import torch
from rdkit import rdBase
from torch_geometric.data import Data
from tqdm import tqdm

from ..data.crop import crop_atoms
from ..data.errors import FeaturizationError
from ..data.featurize import (Failure, FeaturizeResult, featurize_smiles,
                              from_mol, write_failures)
from ..data.xyz import from_xyz_frame, read_xyz_frames
from ..datasets.files import GEOMETRY_KINDS, file_kind
from ..datasets.sdf import has_3d, read_sd_records
from ..datasets.tabular import read_table, resolve_column
from ..errors import ConfigError, InputError, MissingFileError
from .conformers import conformer_seeds

__all__ = ['Cropped', 'MoleculeInputs', 'read_smiles', 'iter_molecules',
           'read_molecules', 'check_conformers',
           'conformer_views', 'write_input_report', 'CROP_INPUT_ATOMS']

#: Largest molecule (heavy atoms) featurized, then cropped, with ``crop``.
CROP_INPUT_ATOMS = 2048
#: What :attr:`Failure.index` counts, per file kind (reported 1-based).
UNITS = {'smiles': 'line', 'table': 'row', 'sdf': 'record', 'xyz': 'frame'}


class Cropped(NamedTuple):
    """A molecule cropped to the atom limit."""
    index: int  #: 0-based input entry (line, row, record or frame)
    smiles: str  #: its identifier (the SMILES)
    atoms: int  #: heavy atoms before the crop
    kept: int  #: atoms kept


@dataclass
class MoleculeInputs:
    """The featurized molecules of (a chunk of) an input file.

    Attributes:
        result (FeaturizeResult): the molecules (``smiles``: the input
            SMILES, or the canonical SMILES of an SD record / XYZ frame;
            ``name``: the name given in the file or ``''``), their 0-based
            input indices and the skipped entries.
        cropped (List[Cropped]): the molecules cropped to the atom limit.
        kind (str): the file's kind (``smiles``, ``table``, ``sdf``,
            ``xyz``).
        total (int, optional): entries of the whole file, when known before
            reading it (SMILES lists and tables).
    """
    result: FeaturizeResult = field(default_factory=FeaturizeResult)
    cropped: List[Cropped] = field(default_factory=list)
    kind: str = 'smiles'
    total: Optional[int] = None

    @property
    def unit(self) -> str:
        """What an input index counts: ``line``, ``row``, ``record`` or
        ``frame``."""
        return UNITS[self.kind]

    def extend(self, other: 'MoleculeInputs') -> None:
        """Appends the molecules, failures and crops of :obj:`other`."""
        self.result.data += other.result.data
        self.result.indices += other.result.indices
        self.result.failures += other.result.failures
        self.cropped += other.cropped


def read_smiles(path: Union[str, Path], smiles_col: Optional[str] = None
                ) -> Tuple[List[str], List[str]]:
    """The SMILES and names of a ``.smi``/``.txt`` file (first
    whitespace-separated field of each non-blank line; the rest of the line,
    if any, is the name) or a table (``.csv``/``.tsv``, optionally gzipped;
    column :obj:`smiles_col`, else ``smiles`` in any case, else the first
    column; no names).

    Raises:
        MissingFileError: no such file (a ``FileNotFoundError``).
        InputError: the file is not text.
        TaskError: the SMILES column is not in the table (naming the
            columns it has).
    """
    path = _existing(path)
    if file_kind(path) == 'table':
        header, rows, _ = read_table(str(path))
        if smiles_col is None:
            lower = [h.lower() for h in header]
            col = lower.index('smiles') if 'smiles' in lower else 0
        else:
            col = header.index(resolve_column(smiles_col, header, str(path)))
        return [row[col].strip() for row in rows], [''] * len(rows)
    opener = gzip.open if path.name.lower().endswith('.gz') else open
    try:
        with opener(path, 'rt') as f:
            fields = [line.split(maxsplit=1) for line in f if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f'SMILES file {path} cannot be read as text ({e}); '
                         f'give a .smi/.txt file with one SMILES per line '
                         f'or a .csv/.tsv table') from None
    return ([f[0] for f in fields],
            [f[1].strip() if len(f) > 1 else '' for f in fields])


def _existing(path: Union[str, Path]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f'molecule file {path}: no such file (check '
                               f'the path given to --smiles)')
    return path


class _Limit(NamedTuple):
    """The atom limit: skip above :attr:`max_atoms`, or crop (seeded)."""
    max_atoms: int
    crop: bool
    seed: int

    @property
    def featurize(self) -> int:
        """The limit given to featurization."""
        return max(self.max_atoms, CROP_INPUT_ATOMS) if self.crop else \
            self.max_atoms

    def apply(self, data: Data, index: int, out: MoleculeInputs) -> None:
        """Adds :obj:`data` (input entry :obj:`index`) to :obj:`out`,
        cropped when over the limit."""
        if data.num_nodes > self.max_atoms:
            out.cropped.append(Cropped(index, data.smiles, data.num_nodes,
                                       self.max_atoms))
            data = crop_atoms(data, self.max_atoms, self.seed)
        out.result.data.append(data)
        out.result.indices.append(index)


def _smiles_chunk(smiles: List[str], names: List[str], start: int,
                  seed: int, limit: _Limit, workers: Optional[int],
                  progress: bool, kind: str = 'smiles',
                  total: Optional[int] = None) -> MoleculeInputs:
    """Entries ``start ...`` of a SMILES input, embedded with :obj:`seed`."""
    result = featurize_smiles(smiles, workers=workers, seed=seed,
                              progress=progress, max_atoms=limit.featurize)
    out = MoleculeInputs(result=FeaturizeResult(
        failures=[f._replace(index=start + f.index)
                  for f in result.failures]), kind=kind, total=total)
    for i, data in zip(result.indices, result.data):
        data.name = names[i]
        limit.apply(data, start + i, out)
    return out


def _geometry_entries(path: Path, kind: str, limit: _Limit
                      ) -> Iterator[Tuple[int, str, Union[Data, str]]]:
    """``(index, name, Data or why it failed)`` of each SD record or XYZ
    frame, featurized with its own coordinates."""
    if kind == 'sdf':
        for i, (mol, _, failure) in enumerate(read_sd_records(str(path))):
            name = mol.GetProp('_Name') if mol is not None and \
                mol.HasProp('_Name') else ''
            if mol is not None and not has_3d(mol):
                failure = 'no 3D conformer (2D or no coordinates)'
            if failure is not None:
                yield i, name, failure
                continue
            yield i, name, _featurized(
                lambda: from_mol(mol, name=name or None,
                                 max_atoms=limit.featurize))
    else:
        for frame in read_xyz_frames(path):
            yield frame.index, frame.name, frame.failure or _featurized(
                lambda: from_xyz_frame(frame, max_atoms=limit.featurize))


def _featurized(make: Callable[[], Data]) -> Union[Data, str]:
    """``make()``, or why it failed (RDKit raises several types)."""
    try:
        with rdBase.BlockLogs():
            return make()
    except FeaturizationError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 (unexpected RDKit errors)
        return f'{type(e).__name__}: {e}'


def iter_molecules(path: Union[str, Path], *,
                   smiles_col: Optional[str] = None, seed: int = 0,
                   workers: Optional[int] = None, max_atoms: int = 256,
                   crop: bool = False, chunk: Optional[int] = None,
                   progress: bool = False) -> Iterator[MoleculeInputs]:
    r"""The molecules of :obj:`path` (any kind, see the module docstring),
    featurized, in chunks of :obj:`chunk` input entries (:obj:`None`: one
    chunk), so that memory does not grow with the file. Indices are those
    of the whole file.

    Args:
        path: the molecule file.
        smiles_col (str, optional): SMILES column of a table.
        seed (int): ETKDG seed of every generated conformer, and seed of
            the crop. (default: :obj:`0`)
        workers (int, optional): featurization processes of SMILES inputs.
        max_atoms (int): the atom limit (heavy atoms). (default: :obj:`256`)
        crop (bool): crop molecules over the limit instead of skipping
            them. (default: :obj:`False`)
        progress (bool): progress bar of each chunk's featurization.

    Raises:
        MissingFileError, InputError: the file is missing or unreadable;
            raised by the call, before any chunk (an SD or XYZ file's
            content is read lazily, with the chunks).
        ConfigError: :obj:`max_atoms` < 1.
    """
    if max_atoms < 1:
        raise ConfigError(f'--max-atoms must be at least 1, got {max_atoms}')
    path = _existing(path)
    kind = file_kind(path)
    limit = _Limit(max_atoms, crop, seed)
    if kind in GEOMETRY_KINDS:
        return _geometry_chunks(path, kind, limit, chunk, progress)
    smiles, names = read_smiles(path, smiles_col)  # errors now, not later
    size = chunk or max(len(smiles), 1)
    return (_smiles_chunk(smiles[rows], names[rows], rows.start, seed, limit,
                          workers, progress, kind, len(smiles))
            for rows in (slice(start, start + size)
                         for start in range(0, len(smiles), size)))


def _geometry_chunks(path: Path, kind: str, limit: _Limit,
                     chunk: Optional[int], progress: bool
                     ) -> Iterator[MoleculeInputs]:
    out = MoleculeInputs(kind=kind)
    entries = tqdm(_geometry_entries(path, kind, limit), unit='mol',
                   desc='Featurizing', disable=not progress)
    for index, name, made in entries:
        if isinstance(made, str):
            out.result.failures.append(Failure(index, name, made))
        else:
            limit.apply(made, index, out)
        if chunk and index % chunk == chunk - 1:
            yield out
            out = MoleculeInputs(kind=kind)
    yield out


def read_molecules(path: Union[str, Path], **options) -> MoleculeInputs:
    """All molecules of :obj:`path`: :func:`iter_molecules` (same options,
    one chunk, progress bar on) merged."""
    options = {'progress': True, **options, 'chunk': None}
    out = None
    for part in iter_molecules(path, **options):
        if out is None:
            out = part
        else:
            out.extend(part)
    return out if out is not None else MoleculeInputs(
        kind=file_kind(path), total=0)


def check_conformers(path: Union[str, Path], conformers: int) -> None:
    """Checks, before reading it, that :obj:`path` can be given
    :obj:`conformers` conformers per molecule.

    Raises:
        ConfigError: :obj:`conformers` < 1, or more than one for a file
            whose molecules have their own geometry (SD, XYZ): that
            geometry is used as it is.
    """
    _check_conformers(file_kind(path), conformers)


def _check_conformers(kind: str, conformers: int) -> None:
    if conformers < 1:
        raise ConfigError(f'--conformers must be at least 1, got '
                          f'{conformers}')
    if conformers > 1 and kind in GEOMETRY_KINDS:
        what = {'sdf': 'an SD', 'xyz': 'an XYZ'}[kind]
        raise ConfigError(
            f'--conformers {conformers}: {what} file gives each molecule its '
            f'own geometry, which is used as it is; generated conformers '
            f'are for SMILES inputs (.smi, .csv); drop --conformers')


def conformer_views(inputs: MoleculeInputs, conformers: int, *,
                    seed: int = 0, workers: Optional[int] = None,
                    max_atoms: int = 256, crop: bool = False,
                    progress: bool = True) -> List[Data]:
    """:obj:`conformers` conformers of each molecule of a SMILES input (see
    the module docstring), flattened molecule by molecule, each with
    ``mol`` ``[1]``: the molecule's position in ``inputs.result.data``
    (what :func:`~pyg_unimol2.train.predict.predict_molecules` averages
    over). Options as the :func:`iter_molecules` call that read
    :obj:`inputs`; a crop keeps the same atoms in every conformer.

    Raises:
        ConfigError: see :func:`check_conformers`.
    """
    _check_conformers(inputs.kind, conformers)
    base = inputs.result.data
    views = [[d] for d in base]
    smiles = [d.smiles for d in base]
    limit = _Limit(max_atoms, crop, seed)
    for extra in conformer_seeds(seed, conformers)[1:]:
        more = _smiles_chunk(smiles, [d.name for d in base], 0, extra,
                             limit, workers, progress).result
        made = dict(zip(more.indices, more.data))
        for i, options in enumerate(views):
            options.append(made.get(i, options[0]))
    out = []
    for i, options in enumerate(views):
        for conf in options:
            conf = conf.clone()
            conf.mol = torch.tensor([i])
            out.append(conf)
    return out


def write_input_report(inputs: MoleculeInputs,
                       out: Union[str, Path]) -> List[str]:
    """Writes the skipped entries to ``<out>.failures.csv`` (``index,
    smiles, reason``) and the cropped molecules to ``<out>.cropped.csv``
    (``index, smiles, atoms, kept``), each only when there are any.

    Returns:
        List[str]: the lines to print: counts, the report files and the
        first 20 entries of each (1-based lines / rows / records /
        frames).
    """
    out, lines = Path(out), []
    failures, cropped = inputs.result.failures, inputs.cropped
    if failures:
        path = out.with_suffix('.failures.csv')
        write_failures(failures, path)
        lines.append(f'{len(failures)} molecules skipped (see {path}):')
        lines += [f'  {inputs.unit} {f.index + 1}: {f.reason}'
                  for f in failures[:20]]
    if cropped:
        path = out.with_suffix('.cropped.csv')
        with open(path, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(Cropped._fields)
            writer.writerows(cropped)
        lines.append(f'{len(cropped)} molecules cropped to their atom limit '
                     f'(see {path}):')
        lines += [f'  {inputs.unit} {c.index + 1}: {c.smiles} ({c.atoms} '
                  f'heavy atoms, {c.kept} kept)' for c in cropped[:20]]
    return lines
