r"""Sharded HDF5 store of featurized molecules for large-scale pretraining.

:func:`build_store` reads SMILES files, embeds one conformer per molecule
(ETKDGv3 + MMFF94, exactly as :func:`~pyg_unimol2.data.featurize.from_smiles`
with the store's seed) in crash-safe worker processes
(:func:`~pyg_unimol2.data.workers.imap_isolated`: a molecule that crashes its
worker twice or exceeds the time limit is a failure, the others are
unaffected) and writes the features into HDF5 shards. :class:`StoreReader`
gives random access to the molecules as :class:`~torch_geometric.data.Data`
objects that follow the contract of
:mod:`pyg_unimol2.data.dense`;
:class:`pyg_unimol2.datasets.hdf5.HDF5MoleculeDataset` wraps it as a PyG
dataset.

Layout of a store directory::

    build.json          settings and inputs of the build (checked on resume)
    shard_000000.h5     molecules of input records [0, S), S = shard size
    shard_000001.h5     molecules of input records [S, 2 S)
    ...
    index.h5            per-molecule arrays of the whole store (samplers)
    failures.csv        file, line, smiles, reason of every skipped record
    manifest.json       counts, settings, versions, shards; written last

A shard holds the molecules of a fixed range of input records (the records
that fail are listed in the shard and skipped), so shard contents depend
neither on the number of workers nor on where a build was interrupted. All
arrays are plain, contiguous (unchunked, uncompressed) HDF5 datasets; ragged
per-molecule data is concatenated and addressed with offsets (no pickled
objects). For a shard with ``M`` molecules, ``A`` atoms, ``E`` directed bonds
(two per bond) and ``P = sum n^2`` atom pairs:

================== ============ ======= ======================================
dataset            shape        dtype   content
================== ============ ======= ======================================
``ptr``            ``[M+1, 7]`` int64   start of each molecule: atom rows of
                                        ``pos``, directed bonds, pairs of
                                        ``spd``, bytes of ``graph``,
                                        ``smiles``, ``name``, ``scaffold``
``graph``          ``[.]``      uint8   per molecule with ``n`` atoms and
                                        ``E`` directed bonds, ``19 n + 5 E``
                                        bytes: ``z`` ``[n]``, ``atom_feat``
                                        ``[n, 8]``, ``degree`` ``[n]``, ``x``
                                        ``[n, 9]``, ``edge_index`` ``[2, E]``
                                        and ``edge_attr`` ``[E, 3]``, each
                                        row-major
``pos``            ``[A, 3]``   float32 coordinates (Angstrom)
``spd``            ``[P]``      int16   shortest-path codes, row-major
``smiles``         ``[.]``      uint8   UTF-8 input SMILES, concatenated
``name``           ``[.]``      uint8   UTF-8 names (``''`` if none)
``scaffold``       ``[.]``      uint8   UTF-8 Murcko scaffold SMILES
``record``         ``[M]``      int64   global input record index
``line``           ``[M]``      int64   line number in its input file
``mol_hash``       ``[M]``      uint64  hash of the canonical SMILES
``scaffold_hash``  ``[M]``      uint64  hash of the scaffold SMILES
``checksum``       ``[M]``      uint32  CRC-32 of each molecule's bytes
                                        (``graph``, ``pos``, ``spd``,
                                        ``smiles``, ``name`` slices, chained)
``failure_record`` ``[F]``      int64   failed records: global index,
``failure_line``   ``[F]``      int64   line number,
``failure_smiles`` ``[F]``      str     SMILES,
``failure_reason`` ``[F]``      str     error message
================== ============ ======= ======================================

All integer graph features fit a byte (atom indices too: at most 256 atoms
per molecule), so one read and one ``astype(int64)`` give every int64 tensor
of a molecule as a view. ``pair_feat`` (from the bonds) and ``pair_type``
(from ``atom_feat[:, 0]``) are derived at read time rather than stored
(``5 n^2`` bytes, more than half of a molecule); ``has_graph`` is always
:obj:`True`.

``index.h5`` holds ``shard_ptr`` ``[S+1]`` (first molecule of each shard),
``layout`` ``[S, 7]`` (byte offset of ``ptr, graph, pos, spd, smiles,
name, checksum`` in each shard file, ``-1`` if empty), ``ptr_checksum``
``[S]`` (CRC-32 of each shard's ``ptr``), and for all ``N`` molecules
``num_atoms`` (uint16), ``mol_hash`` (uint64) and ``scaffold_id`` (int64,
dense ids in order of first appearance), plus ``scaffold_count``. Scaffold
ids are assigned from 64-bit hashes of the scaffold SMILES (memory linear in
the number of molecules, no string table); two scaffolds share an id with
probability about ``S^2 / 2^65`` (``1e-4`` for 73M scaffolds).

**Integrity.** Every read is verified: the CRC-32 of a molecule's bytes
against its ``checksum`` entry, the ``ptr`` table of a shard against
``ptr_checksum`` when the shard is mapped, and ``index.h5`` (whole file)
against the CRC-32 and size in ``manifest.json`` when a reader opens the
store. A mismatch, a truncated file or an unreadable one raises
:class:`CorruptStoreError` naming the file and the molecules affected.
Checking costs one CRC-32 pass over the bytes a read touches anyway
(``benchmarks/hdf5_io.py`` measures it).

Resuming: a shard is written to ``shard_K.h5.tmp``, flushed, fsynced and
renamed, so a shard file that exists is complete. A rerun with the same
settings skips existing shards, deletes leftover ``.tmp`` files and rebuilds
only the missing shards; the result is identical, array for array (and
byte for byte for the shard files), to an uninterrupted build.
"""
import csv
import gzip
import hashlib
import io
import json
import math
import mmap
import os
import platform
import time
import zlib
from bisect import bisect_right
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple,
                    Optional, Sequence, Tuple, Union)

import h5py
import numpy as np
import torch
from rdkit import Chem, rdBase
from torch_geometric.data import Data
from torch_geometric.data.storage import GlobalStorage
from tqdm import tqdm

from ..errors import ConfigError, InputError, MissingFileError, UserError
from .encoding import NO_BOND_PAIR_FEAT
from .errors import FeaturizationError
from .featurize import TIME_LIMIT, _smiles_features
from .splits import murcko_scaffold
from .workers import ItemFailure, imap_isolated, single_thread

__all__ = ['build_store', 'BuildSummary', 'StoreReader', 'StoreError',
           'CorruptStoreError',
           'read_records', 'Record', 'FORMAT_VERSION']

FORMAT_VERSION = 2  # 2: checksums
#: Columns of the ``ptr`` dataset.
PTR_COLUMNS = ('atom', 'edge', 'pair', 'graph', 'smiles', 'name',
               'scaffold')
#: Datasets addressed by the ``layout`` table of ``index.h5``, in order.
LAYOUT_COLUMNS = ('ptr', 'graph', 'pos', 'spd', 'smiles', 'name',
                  'checksum')
ATOM_BYTES = 19  # z, atom_feat[8], degree, x[9]
EDGE_BYTES = 5  # edge_index[:, e], edge_attr[e]
MAX_STORE_ATOMS = 256  # atom indices are uint8
_BOND_OFFSETS = np.array([4, 20, 36], np.uint8)  # OGB index -> pair code
_UNSPECIFIED_CHIRALITY = 3  # atom_feat code of CHI_UNSPECIFIED
_SMILES_COLUMNS = ('smiles', 'smi', 'canonical_smiles', 'isomeric_smiles')
_NAME_COLUMNS = ('name', 'id', 'zinc_id', 'mol_id', 'title')

PathLike = Union[str, os.PathLike]


class StoreError(UserError, RuntimeError):
    """The store directory is inconsistent with the requested build or is
    not a complete store."""


class CorruptStoreError(StoreError):
    r"""A store file whose bytes fail verification (checksum mismatch,
    truncated, unreadable).

    Attributes:
        path (Path): the damaged file.
        molecules (range): store indices of the molecules that cannot be
            read because of it.
    """
    def __init__(self, path: Path, molecules: range, reason: str) -> None:
        self.path, self.molecules = Path(path), molecules
        if len(molecules) == 1:
            which = f'store molecule {molecules.start}'
        else:
            which = (f'store molecules {molecules.start}..'
                     f'{molecules.stop - 1}')
        super().__init__(f'{path}: {reason}; {which} cannot be read '
                         f'(rebuild the store with unimol2 build-hdf5)')


# ---------------------------------------------------------------------------
# Input files
# ---------------------------------------------------------------------------
class Record(NamedTuple):
    """One input molecule."""
    index: int  #: global record index over all input files
    file: int  #: position of the input file
    line: int  #: 1-based line number in that file
    smiles: str
    name: str


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == '.gz':
        return gzip.open(path, 'rt', newline='')
    return open(path, newline='')


def _file_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != '.gz']
    last = suffixes[-1] if suffixes else ''
    if last == '.csv':
        return 'csv'
    if last == '.tsv':
        return 'tsv'
    return 'smi'


def read_records(path: PathLike) -> Iterator[Tuple[int, str, str]]:
    r"""Yields ``(line, smiles, name)`` for every molecule of a SMILES file.

    * ``.smi``/``.txt`` (optionally ``.gz``): one molecule per line, the
      SMILES then an optional name separated by whitespace. Blank lines and
      lines starting with ``#`` are skipped, and so is a first line whose
      first field is ``smiles`` (any case), a header.
    * ``.csv``/``.tsv`` (optionally ``.gz``): a header row, then one row per
      molecule. The SMILES column is the first one named ``smiles``, ``smi``,
      ``canonical_smiles`` or ``isomeric_smiles`` (any case), else the first
      column; the name column, if any, is named ``name``, ``id``, ``zinc_id``,
      ``mol_id`` or ``title``. Rows with an empty SMILES are skipped.

    ``line`` is the 1-based line number of the molecule in the file.

    Raises:
        InputError: the file is not readable text (binary, a damaged
            gzip stream, not UTF-8), naming it and the line reached.
    """
    path = Path(path)
    line = 0
    try:
        for line, smiles, name in _read_lines(path):
            yield line, smiles, name
    except (EOFError, UnicodeDecodeError, csv.Error, gzip.BadGzipFile,
            zlib.error) as e:
        raise InputError(f'{path}: unreadable after line {line} '
                         f'({type(e).__name__}: {e}); give a text .smi, '
                         f'.csv or .tsv file, optionally gzipped') from None


def _read_lines(path: Path) -> Iterator[Tuple[int, str, str]]:
    kind = _file_kind(path)
    with _open_text(path) as f:
        if kind == 'smi':
            for line_no, line in enumerate(f, 1):
                fields = line.split(maxsplit=1)
                if not fields or fields[0].startswith('#'):
                    continue
                if line_no == 1 and fields[0].lower() == 'smiles':
                    continue
                name = fields[1].strip() if len(fields) > 1 else ''
                yield line_no, fields[0], name
            return
        reader = csv.reader(f, delimiter=',' if kind == 'csv' else '\t')
        header = next(reader, None)
        if header is None:
            return
        lower = [h.strip().lower() for h in header]
        smi_col = next((lower.index(c) for c in _SMILES_COLUMNS if c in lower),
                       0)
        name_col = next((lower.index(c) for c in _NAME_COLUMNS if c in lower),
                        None)
        for row in reader:
            if len(row) <= smi_col or not row[smi_col].strip():
                continue
            name = row[name_col].strip() if name_col is not None and \
                len(row) > name_col else ''
            yield reader.line_num, row[smi_col].strip(), name


def _iter_records(inputs: Sequence[Path],
                  limit: Optional[int]) -> Iterator[Record]:
    index = 0
    for file, path in enumerate(inputs):
        for line, smiles, name in read_records(path):
            if limit is not None and index >= limit:
                return
            yield Record(index, file, line, smiles, name)
            index += 1


# ---------------------------------------------------------------------------
# Worker: featurize one record into compact arrays
# ---------------------------------------------------------------------------
def _hash64(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), 'little')


def _pack(features: Dict[str, Any], smiles: str) -> Dict[str, Any]:
    """Compact store arrays of the features of one molecule."""
    z, x = features['z'], features['x']
    atom_feat, degree = features['atom_feat'], features['degree']
    n = z.shape[0]
    if n > MAX_STORE_ATOMS:
        raise FeaturizationError(smiles, f'{n} atoms > {MAX_STORE_ATOMS}, the '
                                 f'largest molecule a store can hold')
    edge_index, edge_attr = features['edge_index'], features['edge_attr']
    graph = np.concatenate([z, atom_feat.reshape(-1), degree, x.reshape(-1),
                            edge_index.reshape(-1), edge_attr.reshape(-1)])
    if graph.size and (graph.min() < 0 or graph.max() > 255):
        raise FeaturizationError(smiles, 'a graph feature does not fit the '
                                 'store (uint8)')
    mol = Chem.MolFromSmiles(smiles)
    canonical = Chem.MolToSmiles(mol) if mol is not None else smiles
    scaffold = murcko_scaffold(smiles)
    return dict(
        graph=graph.astype(np.uint8),
        num_edges=edge_index.shape[1],
        pos=np.ascontiguousarray(features['pos'], np.float32),
        spd=np.ascontiguousarray(features['spd'], np.int16),
        scaffold=scaffold,
        mol_hash=_hash64(canonical),
        scaffold_hash=_hash64(scaffold),
    )


def _featurize_record(record: Record, seed: int, remove_hs: bool,
                      max_atoms: int, optimize: bool,
                      time_limit: Optional[float]) -> Union[Dict, str]:
    """Worker job: the packed features of :obj:`record`, or why they
    failed."""
    smiles = record.smiles
    try:
        with rdBase.BlockLogs():
            features = _smiles_features(smiles, seed, remove_hs, max_atoms,
                                        optimize, time_limit)
            return _pack(features, smiles)
    except FeaturizationError as e:
        return str(e)
    except Exception as e:  # Unexpected RDKit errors skip the molecule too.
        return f'{type(e).__name__}: {e} ({smiles!r})'


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def _shard_name(k: int) -> str:
    return f'shard_{k:06d}.h5'


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, final: Path) -> None:
    """fsyncs :obj:`tmp` and renames it to :obj:`final` atomically."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _blob(texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode() for t in texts]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    data = np.frombuffer(b''.join(encoded), np.uint8)
    return data, lengths


def _write_shard(path: Path, k: int, first_record: int,
                 results: List[Tuple[Record, Union[Dict, str]]]) -> None:
    mols = [(r, out) for r, out in results if not isinstance(out, str)]
    fails = [(r, out) for r, out in results if isinstance(out, str)]
    counts = np.zeros((len(mols), len(PTR_COLUMNS)), np.int64)
    smiles, smiles_len = _blob([r.smiles for r, _ in mols])
    names, names_len = _blob([r.name for r, _ in mols])
    scaffolds, scaffolds_len = _blob([m['scaffold'] for _, m in mols])
    n_atoms = np.array([m['pos'].shape[0] for _, m in mols], np.int64)
    counts[:, 0] = n_atoms
    counts[:, 1] = [m['num_edges'] for _, m in mols]
    counts[:, 2] = n_atoms * n_atoms
    counts[:, 3] = [m['graph'].shape[0] for _, m in mols]
    counts[:, 4], counts[:, 5], counts[:, 6] = smiles_len, names_len, \
        scaffolds_len
    ptr = np.zeros((len(mols) + 1, len(PTR_COLUMNS)), np.int64)
    np.cumsum(counts, axis=0, out=ptr[1:])

    def cat(key, dtype, shape):
        if not mols:
            return np.zeros(shape, dtype)
        return np.concatenate([m[key] for _, m in mols]).astype(dtype)

    checksum = np.array([_crc32(m['graph'], m['pos'], m['spd'],
                                r.smiles.encode(), r.name.encode())
                         for r, m in mols], np.uint32)

    # Created (and so laid out) in this order: the tables a truncated file
    # must still hold to name the molecules cut off come first.
    arrays = dict(
        ptr=ptr,
        checksum=checksum,
        graph=cat('graph', np.uint8, (0, )),
        pos=cat('pos', np.float32, (0, 3)),
        spd=cat('spd', np.int16, (0, )),
        smiles=smiles,
        name=names,
        scaffold=scaffolds,
        record=np.array([r.index for r, _ in mols], np.int64),
        line=np.array([r.line for r, _ in mols], np.int64),
        mol_hash=np.array([m['mol_hash'] for _, m in mols], np.uint64),
        scaffold_hash=np.array([m['scaffold_hash'] for _, m in mols],
                               np.uint64),
        failure_record=np.array([r.index for r, _ in fails], np.int64),
        failure_line=np.array([r.line for r, _ in fails], np.int64),
    )
    tmp = path.with_name(path.name + '.tmp')
    with h5py.File(tmp, 'w') as f:
        f.attrs['format_version'] = FORMAT_VERSION
        f.attrs['shard'] = k
        f.attrs['first_record'] = first_record
        f.attrs['num_records'] = len(results)
        f.attrs['num_molecules'] = len(mols)
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        str_dtype = h5py.string_dtype('utf-8')
        f.create_dataset('failure_smiles', data=np.array(
            [r.smiles for r, _ in fails], dtype=object), dtype=str_dtype)
        f.create_dataset('failure_reason', data=np.array(
            [out for _, out in fails], dtype=object), dtype=str_dtype)
    _commit(tmp, path)


def _crc32(*buffers: Any) -> int:
    """Chained CRC-32 of :obj:`buffers` (bytes or contiguous arrays)."""
    crc = 0
    for buffer in buffers:
        crc = zlib.crc32(buffer, crc)
    return crc


def _file_crc32(path: Path, block: int = 1 << 24) -> int:
    crc = 0
    with open(path, 'rb') as f:
        while chunk := f.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
        f.write('\n')
    _commit(tmp, path)


def _versions() -> Dict[str, str]:
    from rdkit import __version__ as rdkit_version

    try:
        from importlib.metadata import version
        package = version('pyg-unimol2')
    except Exception:  # pragma: no cover - not installed
        package = 'unknown'
    return {'pyg_unimol2': package, 'rdkit': rdkit_version,
            'numpy': np.__version__, 'h5py': h5py.__version__,
            'hdf5': h5py.version.hdf5_version,
            'python': platform.python_version()}


@dataclass
class BuildSummary:
    """What :func:`build_store` did.

    Attributes:
        out_dir (str): the store.
        num_records (int): input records.
        num_molecules (int): molecules in the store.
        num_failures (int): records skipped (see ``failures.csv``).
        num_shards (int): shards of the store.
        built_shards (int): shards featurized by this call (``0`` when the
            store was already complete).
        built_records (int): input records featurized by this call.
        seconds (float): wall time of this call.
    """
    out_dir: str
    num_records: int
    num_molecules: int
    num_failures: int
    num_shards: int
    built_shards: int
    built_records: int
    seconds: float

    @property
    def records_per_second(self) -> float:
        """Featurization throughput of this call."""
        return self.built_records / self.seconds if self.seconds else 0.0


def build_store(inputs: Union[PathLike, Sequence[PathLike]],
                out_dir: PathLike, *, workers: Optional[int] = None,
                shard_size: int = 10_000, seed: int = 0,
                limit: Optional[int] = None, remove_hs: bool = True,
                max_atoms: int = 256, optimize: bool = True,
                chunksize: int = 8,
                time_limit: Optional[float] = TIME_LIMIT,
                progress: bool = True, verbose: bool = True) -> BuildSummary:
    r"""Builds (or resumes building) a sharded HDF5 store from SMILES files.

    Every molecule is featurized like
    :func:`~pyg_unimol2.data.featurize.from_smiles` with ``seed=seed``: the
    same ETKDGv3 seed for every molecule, so its conformer depends neither
    on its position nor on :obj:`workers`. Records that fail are skipped and
    listed in ``failures.csv`` (input file, line, SMILES, reason), among
    them a molecule that crashes its worker process twice (``'worker
    crashed (...)'``) or takes longer than :obj:`time_limit` (``'timed out
    after N s'``); the other molecules that a dead worker held are
    featurized again, so a crash does not change the store.

    Rerunning with the same inputs and settings resumes: finished shards are
    kept, an interrupted shard is rebuilt, and a complete store is left
    untouched (no work). Rerunning with other settings raises
    :class:`StoreError`; :obj:`workers`, :obj:`chunksize`,
    :obj:`time_limit` and :obj:`progress` may change freely.

    Args:
        inputs (path or list of paths): ``.smi``, ``.csv``, ``.tsv`` files,
            optionally gzipped (see :func:`read_records`), in order.
        out_dir (path): the store directory (created if needed).
        workers (int, optional): featurization processes; ``1`` runs in
            the calling process. (default: :obj:`None`, ``os.cpu_count()``)
        shard_size (int, optional): input records per shard.
            (default: :obj:`10000`)
        seed (int, optional): ETKDG seed of every molecule.
            (default: :obj:`0`)
        limit (int, optional): use only the first :obj:`limit` records of
            the inputs. (default: :obj:`None`)
        remove_hs, max_atoms, optimize: see
            :func:`~pyg_unimol2.data.featurize.from_smiles`;
            :obj:`max_atoms` is at most ``256``.
        chunksize (int, optional): molecules sent to a worker at once.
            (default: :obj:`8`)
        time_limit (float, optional): seconds one molecule may take; also
            RDKit's embedding timeout. With ``workers=1`` only the latter
            applies. (default:
            :data:`~pyg_unimol2.data.featurize.TIME_LIMIT`, 300;
            :obj:`None`: no limit)
        progress (bool, optional): show a progress bar (molecules/s).
            (default: :obj:`True`)
        verbose (bool, optional): print a summary. (default: :obj:`True`)

    Returns:
        BuildSummary: counts and the throughput of this call.
    """
    start = time.perf_counter()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [Path(p) for p in inputs]
    for p in inputs:
        if not p.is_file():
            raise MissingFileError(f'SMILES file {p}: no such file (give '
                                   f'.smi, .csv or .tsv files, optionally '
                                   f'gzipped)')
    if not 1 <= max_atoms <= MAX_STORE_ATOMS:
        raise ConfigError(f'max_atoms must be in 1..{MAX_STORE_ATOMS}, got '
                          f'{max_atoms}')
    if shard_size < 1:
        raise ConfigError(f'shard_size must be positive, got {shard_size}')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(format_version=FORMAT_VERSION, seed=seed,
                    shard_size=shard_size, limit=limit, remove_hs=remove_hs,
                    max_atoms=max_atoms, optimize=optimize,
                    conformer='ETKDGv3 + MMFF94' if optimize else 'ETKDGv3')
    build = dict(settings=settings, inputs=[
        dict(path=str(p.resolve()), bytes=p.stat().st_size) for p in inputs])
    build_path = out / 'build.json'
    if build_path.exists():
        previous = json.loads(build_path.read_text())
        if previous != build:
            stored = previous.get('settings', {})
            changed = [f'{k} {stored.get(k)!r} -> {v!r}'
                       for k, v in settings.items() if stored.get(k) != v]
            if previous.get('inputs') != build['inputs']:
                changed.append('the input files (paths or sizes)')
            raise StoreError(
                f'{out} holds a store built with other inputs or settings '
                f'({", ".join(changed) or build_path}); use a new directory '
                f'or delete it')
    else:
        _write_json(build_path, build)

    manifest_path = out / 'manifest.json'
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        summary = BuildSummary(str(out), manifest['counts']['records'],
                               manifest['counts']['molecules'],
                               manifest['counts']['failures'],
                               manifest['counts']['shards'], 0, 0,
                               time.perf_counter() - start)
        if verbose:
            print(f'{out}: store complete ({summary.num_molecules} '
                  f'molecules, {summary.num_shards} shards); nothing to do')
        return summary

    for tmp in out.glob('*.tmp'):  # Leftovers of an interrupted build.
        tmp.unlink()
    file_records = [sum(1 for _ in read_records(p)) for p in inputs]
    if limit is not None:
        left, capped = limit, []
        for count in file_records:
            capped.append(min(count, left))
            left -= capped[-1]
        file_records = capped
    num_records = sum(file_records)
    num_shards = math.ceil(num_records / shard_size)
    pending = [k for k in range(num_shards)
               if not (out / _shard_name(k)).exists()]
    built_records = sum(min(shard_size, num_records - k * shard_size)
                        for k in pending)
    if verbose and pending and len(pending) < num_shards:
        print(f'{out}: resuming, {num_shards - len(pending)} of {num_shards} '
              f'shards already built')
    job = partial(_featurize_record, seed=seed, remove_hs=remove_hs,
                  max_atoms=max_atoms, optimize=optimize,
                  time_limit=time_limit)
    workers = min(workers or os.cpu_count() or 1, max(built_records, 1))
    t0 = time.perf_counter()
    if pending:
        shards = _pending_shards(inputs, limit, shard_size, set(pending))
        queued: deque = deque()
        outputs = imap_isolated(job, _queued(shards, queued), workers,
                                chunksize=chunksize,
                                time_limit=time_limit,
                                initializer=single_thread,
                                lookahead=shard_size)
        with closing(outputs), tqdm(total=built_records, unit='mol',
                                    desc='Building store',
                                    disable=not progress,
                                    smoothing=0.05) as bar:
            _run_shards(queued, outputs, out, bar)
    featurize_seconds = time.perf_counter() - t0
    manifest = _finalize(out, inputs, file_records, settings, shard_size,
                         num_shards)
    counts = manifest['counts']
    summary = BuildSummary(str(out), counts['records'], counts['molecules'],
                           counts['failures'], num_shards, len(pending),
                           built_records, time.perf_counter() - start)
    if verbose:
        rate = built_records / featurize_seconds if featurize_seconds else 0
        print(f'{out}: {counts["molecules"]} molecules in {num_shards} shards'
              f', {counts["failures"]} failures; featurized {built_records} '
              f'records in {featurize_seconds:.1f} s ({rate:.1f} mol/s, '
              f'{workers} workers)')
        _print_failures(out)
    return summary


def _pending_shards(inputs: Sequence[Path], limit: Optional[int],
                    shard_size: int,
                    pending: set) -> Iterator[Tuple[int, List[Record]]]:
    """``(shard, records)`` of every pending shard, in order; the records
    of finished shards are read and dropped."""
    current, records = None, []
    for record in _iter_records(inputs, limit):
        k = record.index // shard_size
        if k not in pending:
            continue
        if k != current and records:
            yield current, records
            records = []
        current = k
        records.append(record)
    if records:
        yield current, records


def _queued(shards: Iterator[Tuple[int, List[Record]]],
            queued: deque) -> Iterator[Record]:
    """The records of :obj:`shards`, one after the other; ``(shard,
    records)`` is appended to :obj:`queued` when the first record of a shard
    is taken."""
    for k, records in shards:
        queued.append((k, records))
        yield from records


def _run_shards(queued: deque, outputs: Iterator, out: Path,
                bar: tqdm) -> None:
    """Collects the :obj:`outputs` of the records of the shards in
    :obj:`queued` (see :func:`_queued`), in order, and writes each finished
    shard in a background thread while the workers go on with the next."""
    collected: List[Tuple[Record, Union[Dict, str]]] = []
    writing: Optional[Future] = None
    with ThreadPoolExecutor(1) as writer:
        for output in outputs:
            k, records = queued[0]
            record = records[len(collected)]
            if isinstance(output, ItemFailure):
                output = f'{output.reason} ({record.smiles!r})'
            collected.append((record, output))
            bar.update()
            if len(collected) == len(records):
                queued.popleft()
                if writing is not None:
                    writing.result()
                writing = writer.submit(_write_shard, out / _shard_name(k),
                                        k, records[0].index, collected)
                collected = []
        if writing is not None:
            writing.result()


def _finalize(out: Path, inputs: Sequence[Path], file_records: List[int],
              settings: Dict, shard_size: int, num_shards: int) -> Dict:
    """Writes ``index.h5``, ``failures.csv`` and, last, ``manifest.json``
    from the shards."""
    shard_ptr = np.zeros(num_shards + 1, np.int64)
    layout = np.full((num_shards, len(LAYOUT_COLUMNS)), -1, np.int64)
    ptr_checksum = np.zeros(num_shards, np.uint32)
    num_atoms, mol_hash, scaffold_hash, shard_info = [], [], [], []
    failures = []
    totals = dict(atoms=0, bonds=0, pairs=0)
    file_start = np.cumsum([0] + list(file_records))
    for k in range(num_shards):
        with h5py.File(out / _shard_name(k), 'r') as f:
            if f.attrs['format_version'] != FORMAT_VERSION:
                raise StoreError(f'{out / _shard_name(k)}: format version '
                                 f'{f.attrs["format_version"]}')
            ptr = f['ptr'][:]
            ptr_checksum[k] = _crc32(ptr)
            for c, key in enumerate(LAYOUT_COLUMNS):
                offset = f[key].id.get_offset()
                if f[key].size and offset is None:
                    raise StoreError(f'{key} of {_shard_name(k)} is not '
                                     f'contiguous')
                layout[k, c] = -1 if offset is None else offset
            counts = np.diff(ptr[:, 0])
            num_atoms.append(counts)
            mol_hash.append(f['mol_hash'][:])
            scaffold_hash.append(f['scaffold_hash'][:])
            shard_ptr[k + 1] = shard_ptr[k] + counts.shape[0]
            totals['atoms'] += int(ptr[-1, 0])
            totals['bonds'] += int(ptr[-1, 1]) // 2
            totals['pairs'] += int(ptr[-1, 2])
            for rec, line, smi, reason in zip(
                    f['failure_record'][:], f['failure_line'][:],
                    f['failure_smiles'].asstr()[:],
                    f['failure_reason'].asstr()[:]):
                file = int(np.searchsorted(file_start, rec, 'right') - 1)
                failures.append((str(inputs[file]), int(line), smi, reason))
            shard_info.append(dict(
                file=_shard_name(k), first_record=int(f.attrs['first_record']),
                num_records=int(f.attrs['num_records']),
                num_molecules=int(f.attrs['num_molecules'])))
    num_atoms = np.concatenate(num_atoms) if num_atoms else np.zeros(0)
    mol_hash = np.concatenate(mol_hash) if mol_hash else np.zeros(0, np.uint64)
    scaffold_hash = np.concatenate(scaffold_hash) if scaffold_hash else \
        np.zeros(0, np.uint64)
    _, first, inverse, counts = np.unique(
        scaffold_hash, return_index=True, return_inverse=True,
        return_counts=True)
    order = np.argsort(first, kind='stable')  # ids by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    scaffold_id = rank[inverse.reshape(-1)].astype(np.int64)
    scaffold_count = counts[order].astype(np.int64)

    tmp = out / 'index.h5.tmp'
    with h5py.File(tmp, 'w') as f:
        f.attrs['format_version'] = FORMAT_VERSION
        f.create_dataset('shard_ptr', data=shard_ptr)
        f.create_dataset('layout', data=layout)
        f.create_dataset('ptr_checksum', data=ptr_checksum)
        f.create_dataset('num_atoms', data=num_atoms.astype(np.uint16))
        f.create_dataset('mol_hash', data=mol_hash.astype(np.uint64))
        f.create_dataset('scaffold_id', data=scaffold_id)
        f.create_dataset('scaffold_count', data=scaffold_count)
    _commit(tmp, out / 'index.h5')
    index_file = dict(path='index.h5',
                      bytes=(out / 'index.h5').stat().st_size,
                      crc32=_file_crc32(out / 'index.h5'))

    tmp = out / 'failures.csv.tmp'
    with open(tmp, 'w', newline='') as fh:
        writer = csv.writer(fh)
        writer.writerow(['file', 'line', 'smiles', 'reason'])
        writer.writerows(failures)
    _commit(tmp, out / 'failures.csv')

    manifest = dict(
        format='pyg_unimol2 sharded HDF5 molecule store',
        format_version=FORMAT_VERSION,
        settings=settings,
        versions=_versions(),
        inputs=[dict(path=str(p), records=n)
                for p, n in zip(inputs, file_records)],
        counts=dict(records=int(sum(file_records)),
                    molecules=int(shard_ptr[-1]), failures=len(failures),
                    shards=num_shards, scaffolds=int(scaffold_count.shape[0]),
                    **totals),
        files=dict(index=index_file, failures='failures.csv'),
        shards=shard_info,
    )
    _write_json(out / 'manifest.json', manifest)
    return manifest


def _print_failures(out: Path, limit: int = 20) -> None:
    with open(out / 'failures.csv', newline='') as f:
        rows = list(csv.reader(f))[1:]
    if not rows:
        return
    print(f'{len(rows)} records skipped (all in {out / "failures.csv"}):')
    for file, line, _, reason in rows[:limit]:
        print(f'  {Path(file).name}:{line}: {reason}')
    if len(rows) > limit:
        print(f'  ... and {len(rows) - limit} more')


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
class _MappedShard:
    """Read-only memory map of one shard file and array views of its
    datasets (layout offsets from ``index.h5``).

    The ``ptr`` table is verified against its CRC-32 here; the other arrays
    are cut at the end of the file (a truncated shard), so that
    :meth:`StoreReader.read_raw` finds the molecules beyond the cut short
    and names them.
    """
    __slots__ = ('path', 'map', 'ptr', 'checksum', 'graph', 'pos', 'spd',
                 'smiles_offset', 'name_offset')

    def __init__(self, path: Path, layout: List[int], num_molecules: int,
                 ptr_checksum: int, molecules: range) -> None:
        self.path = path
        try:
            with open(path, 'rb') as f:
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:  # ValueError: an empty file
            raise CorruptStoreError(path, molecules,
                                    f'unreadable shard ({e})') from None
        width = len(PTR_COLUMNS)
        ptr = self._view(np.int64, (num_molecules + 1) * width, layout[0])
        checksum = self._view(np.uint32, num_molecules, layout[6])
        if ptr.shape[0] < (num_molecules + 1) * width or \
                checksum.shape[0] < num_molecules:
            raise CorruptStoreError(path, molecules, 'truncated shard file '
                                    f'({len(self.map)} bytes)')
        if _crc32(ptr) != ptr_checksum:
            raise CorruptStoreError(path, molecules, 'checksum mismatch in '
                                    'the molecule table (ptr)')
        self.ptr, self.checksum = ptr.reshape(-1, width), checksum
        atoms, _, pairs, graph = self.ptr[-1, :4].tolist()
        self.graph = self._view(np.uint8, graph, layout[1])
        self.pos = self._view(np.float32, 3 * atoms, layout[2])
        self.spd = self._view(np.int16, pairs, layout[3])
        self.smiles_offset, self.name_offset = layout[4], layout[5]

    def _view(self, dtype, count: int, offset: int) -> np.ndarray:
        """Up to :obj:`count` items from byte :obj:`offset`, fewer if the
        file ends before."""
        size = np.dtype(dtype).itemsize
        count = max(min(count, (len(self.map) - offset) // size), 0)
        if count == 0:
            return np.zeros(0, dtype)
        return np.frombuffer(self.map, dtype, count, offset)

    def text(self, offset: int, length: int) -> bytes:
        return self.map[offset:offset + length] if length else b''


class StoreReader:
    r"""Random access to the molecules of a complete store.

    Shard files are memory-mapped (read-only) lazily, per process: a reader
    copied into a forked or spawned :class:`~torch.utils.data.DataLoader`
    worker maps its own. A molecule is a few contiguous slices of the maps,
    at byte offsets taken from ``index.h5``: no system call and no HDF5
    library call per molecule. At most :obj:`max_open_files` shards stay
    mapped (least recently used first out), so the memory of a reader is
    bounded whatever the size of the store: its anonymous memory does not
    grow with reads, and its resident file-backed pages (clean page cache,
    which the OS reclaims at will) are at most those of the mapped shards.

    Args:
        root (path): the store directory.
        max_open_files (int, optional): shards kept mapped per process.
            (default: :obj:`64`)
    """
    def __init__(self, root: PathLike, max_open_files: int = 64) -> None:
        self.root = Path(root)
        manifest_path = self.root / 'manifest.json'
        if not self.root.is_dir():
            raise StoreError(f'store {self.root}: no such directory (build '
                             f'one with unimol2 build-hdf5 SMILES_FILE '
                             f'{self.root})')
        if not manifest_path.exists():
            raise StoreError(f'{self.root} is not a complete store (no '
                             f'manifest.json); run build-hdf5 on it')
        try:
            self.manifest = json.loads(manifest_path.read_text())
            version = self.manifest['format_version']
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f'{manifest_path}: unreadable manifest ({e}); '
                             f'rebuild the store with unimol2 build-hdf5'
                             ) from None
        if version != FORMAT_VERSION:
            raise StoreError(f'{self.root}: store format version {version}, '
                             f'this version reads {FORMAT_VERSION}; rebuild '
                             f'it with unimol2 build-hdf5')
        self._check_index()
        with h5py.File(self.root / 'index.h5', 'r') as f:
            shard_ptr = f['shard_ptr'][:]
            layout = f['layout'][:]
            self._ptr_checksum: List[int] = f['ptr_checksum'][:].tolist()
        self._shard_ptr: List[int] = shard_ptr.tolist()
        self._layout: List[List[int]] = layout.tolist()
        self._files = [self.root / s['file'] for s in self.manifest['shards']]
        self._num_molecules = [s['num_molecules']
                               for s in self.manifest['shards']]
        self.max_open_files = max(int(max_open_files), 1)
        self._maps: 'OrderedDict[int, _MappedShard]' = OrderedDict()
        self._broken: Dict[int, CorruptStoreError] = {}
        self._pid = os.getpid()

    def _check_index(self) -> None:
        """Verifies ``index.h5`` against the size and CRC-32 of the
        manifest."""
        path = self.root / 'index.h5'
        expected = self.manifest['files']['index']
        everything = range(self.manifest['counts']['molecules'])
        try:
            size = path.stat().st_size
            if size != expected['bytes']:
                raise CorruptStoreError(path, everything, f'{size} bytes, '
                                        f'the manifest says '
                                        f'{expected["bytes"]} (truncated?)')
            if _file_crc32(path) != expected['crc32']:
                raise CorruptStoreError(path, everything,
                                        'checksum mismatch')
        except OSError as e:
            raise CorruptStoreError(path, everything,
                                    f'unreadable ({e})') from None

    def __len__(self) -> int:
        return self._shard_ptr[-1]

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({str(self.root)!r}, {len(self)})'

    # Per-molecule arrays of index.h5 -------------------------------------
    def _index_array(self, key: str) -> np.ndarray:
        with h5py.File(self.root / 'index.h5', 'r') as f:
            return f[key][:]

    @property
    def num_atoms(self) -> np.ndarray:
        """Number of atoms of every molecule, ``[N]`` int64."""
        return self._index_array('num_atoms').astype(np.int64)

    @property
    def scaffold_id(self) -> np.ndarray:
        """Murcko scaffold id of every molecule (dense, in order of first
        appearance), ``[N]`` int64."""
        return self._index_array('scaffold_id')

    @property
    def scaffold_count(self) -> np.ndarray:
        """Number of molecules of every scaffold id, ``[num_scaffolds]``."""
        return self._index_array('scaffold_count')

    def mol_hash_chunks(self, chunk: int = 1 << 20
                        ) -> Iterator[Tuple[int, np.ndarray]]:
        """``(start, hashes)`` of the canonical-SMILES hashes, in chunks of
        :obj:`chunk` molecules (flat memory for any store size)."""
        with h5py.File(self.root / 'index.h5', 'r') as f:
            ds = f['mol_hash']
            for start in range(0, ds.shape[0], chunk):
                yield start, ds[start:start + chunk]

    # Mapped shards -------------------------------------------------------
    def __getstate__(self) -> Dict:
        state = self.__dict__.copy()
        state['_maps'] = OrderedDict()
        state['_broken'] = {}
        state['_pid'] = None
        return state

    def close(self) -> None:
        """Unmaps the shards mapped by this process (once no array returned
        by :meth:`read_raw` refers to them)."""
        self._maps = OrderedDict()

    def _shard(self, shard: int) -> '_MappedShard':
        if self._pid != os.getpid():  # A fresh process: map anew.
            self._maps = OrderedDict()
            self._pid = os.getpid()
        mapped = self._maps.get(shard)
        if mapped is None:
            if shard in self._broken:
                raise self._broken[shard]
            if len(self._maps) >= self.max_open_files:
                self._maps.popitem(last=False)
            molecules = range(self._shard_ptr[shard],
                              self._shard_ptr[shard + 1])
            try:
                mapped = _MappedShard(
                    self._files[shard], self._layout[shard],
                    self._num_molecules[shard], self._ptr_checksum[shard],
                    molecules)
            except CorruptStoreError as e:
                self._broken[shard] = e
                raise
            self._maps[shard] = mapped
        elif len(self._maps) > 1:
            self._maps.move_to_end(shard)
        return mapped

    # Molecules -----------------------------------------------------------
    def locate(self, index: int) -> Tuple[int, int]:
        """``(shard, position in shard)`` of molecule :obj:`index`."""
        if not 0 <= index < len(self):
            raise IndexError(f'molecule {index} out of range for a store of '
                             f'{len(self)}')
        shard = bisect_right(self._shard_ptr, index) - 1
        return shard, index - self._shard_ptr[shard]

    def read_raw(self, index: int) -> Dict[str, Any]:
        """The stored arrays of molecule :obj:`index`, verified against its
        checksum: ``graph`` ``[19 n + 5 E]`` uint8 (a read-only view of the
        map), ``pos`` ``[n, 3]`` float32, ``spd`` ``[n * n]`` int16
        (copies), ``smiles`` and ``name``.

        Raises:
            CorruptStoreError: the molecule's bytes (or its shard's table)
                are damaged or cut off.
        """
        shard, local = self.locate(index)
        m = self._shard(shard)
        a0, _, q0, g0, s0, n0, _, a1, _, q1, g1, s1, n1, _ = \
            m.ptr[local:local + 2].ravel().tolist()
        graph, pos = m.graph[g0:g1], m.pos[3 * a0:3 * a1]
        spd = m.spd[q0:q1]
        smiles = m.text(m.smiles_offset + s0, s1 - s0)
        name = m.text(m.name_offset + n0, n1 - n0)
        if (graph.shape[0], pos.shape[0], spd.shape[0], len(smiles),
                len(name)) != (g1 - g0, 3 * (a1 - a0), q1 - q0, s1 - s0,
                               n1 - n0):
            raise CorruptStoreError(m.path, range(index, index + 1),
                                    'truncated shard file')
        if _crc32(graph, pos, spd, smiles, name) != int(m.checksum[local]):
            raise CorruptStoreError(m.path, range(index, index + 1),
                                    'checksum mismatch')
        return dict(graph=graph, pos=pos.reshape(-1, 3).copy(),
                    spd=spd.copy(), smiles=smiles.decode(),
                    name=name.decode())

    def get(self, index: int) -> Data:
        """Molecule :obj:`index` as a :class:`~torch_geometric.data.Data`
        with the attributes of :mod:`pyg_unimol2.data.dense`, identical to
        what :func:`~pyg_unimol2.data.featurize.from_smiles` returns for its
        SMILES with the store's seed."""
        return decode(self.read_raw(index))

    def scaffold_smiles(self, index: int) -> str:
        """Murcko scaffold SMILES of molecule :obj:`index`."""
        shard, local = self.locate(index)
        with h5py.File(self._files[shard], 'r') as f:
            start, stop = f['ptr'][local:local + 2, 6]
            return f['scaffold'][start:stop].tobytes().decode()


#: Pair patterns of molecules with at most this many atoms are cached (at
#: most ~3.5 MB per process for all sizes).
_CACHE_ATOMS = 128
_NO_BOND_CACHE: Dict[int, np.ndarray] = {}
_PAIR_TYPE_CACHE: Dict[Tuple[int, int], np.ndarray] = {}


def _no_bond_pairs(n: int) -> np.ndarray:
    """A fresh ``[n * n, 3]`` uint8 array of the no-bond pair code."""
    pattern = _NO_BOND_CACHE.get(n)
    if pattern is None:
        pattern = np.full((n * n, 3), NO_BOND_PAIR_FEAT, np.uint8)
        if n <= _CACHE_ATOMS:
            _NO_BOND_CACHE[n] = pattern
        else:
            return pattern
    return pattern.copy()


def _constant_pair_type(n: int, a: int) -> np.ndarray:
    """A fresh ``[n * n, 2]`` uint8 pair-type array of ``n`` atoms that all
    have the chirality code :obj:`a`: ``[a + 1, a + 129]``."""
    pattern = _PAIR_TYPE_CACHE.get((n, a))
    if pattern is None:
        pattern = np.empty((n * n, 2), np.uint8)
        pattern[:, 0] = a + 1
        pattern[:, 1] = a + 129
        if n <= _CACHE_ATOMS and a == _UNSPECIFIED_CHIRALITY:
            _PAIR_TYPE_CACHE[(n, a)] = pattern
        else:
            return pattern
    return pattern.copy()


def _data_factory() -> Callable[[], Data]:
    """An empty :class:`~torch_geometric.data.Data` without running
    ``Data.__init__`` (a third of the cost of decoding a molecule): the
    instance state of ``Data()`` is copied and a fresh storage attached, as
    ``Data.__init__`` does. Falls back to ``Data`` if PyG's layout differs
    from the one this was written for."""
    reference = Data()
    state = dict(vars(reference))
    storage = state.pop('_store', None)
    if type(storage) is not GlobalStorage or set(state) != {
            '_tensor_attr_cls', '_edge_attr_cls'} or len(storage) != 0:
        return Data  # pragma: no cover - other PyG versions

    def new() -> Data:
        data = Data.__new__(Data)
        data.__dict__.update(state)
        data.__dict__['_store'] = GlobalStorage(_parent=data)
        return data

    probe = new()
    if set(vars(probe)) != set(vars(reference)) or \
            probe._store._parent() is not probe:
        return Data  # pragma: no cover
    return new


_new_data = _data_factory()


def decode(raw: Dict[str, Any]) -> Data:
    """Turns the stored arrays of one molecule (:meth:`StoreReader.read_raw`)
    into a :class:`~torch_geometric.data.Data`."""
    graph, pos = raw['graph'], raw['pos']
    n = pos.shape[0]
    e = (graph.shape[0] - ATOM_BYTES * n) // EDGE_BYTES
    ints = graph.astype(np.int64)
    c = ATOM_BYTES * n  # start of edge_index

    # pair_feat: [2, 2, 2] except on bonds.
    pair_feat = _no_bond_pairs(n)
    if e:
        pair_feat.reshape(n, n, 3)[ints[c:c + e], ints[c + e:c + 2 * e]] = \
            graph[c + 2 * e:].reshape(e, 3) + _BOND_OFFSETS
    # pair_type from the chirality code a = atom_feat[:, 0]: almost always
    # a single value per molecule, which is a copy of a cached pattern.
    chirality = graph[n:9 * n:8].tobytes()
    if chirality.count(chirality[0]) == n:
        pair_type = _constant_pair_type(n, chirality[0])
    else:
        a = graph[n:9 * n:8]
        pair_type = np.empty((n * n, 2), np.uint8)
        view = pair_type.reshape(n, n, 2)
        view[..., 0] = (a + 1)[:, None]
        view[..., 1] = (a + 129)[None, :]

    # Views of one int64 buffer; numpy slicing is cheaper than torch's.
    tensor = torch.from_numpy
    data = _new_data()
    # Bypasses Data.__setattr__ (about 10 us per attribute); same result.
    data._store._mapping.update(
        z=tensor(ints[:n]),
        atom_feat=tensor(ints[n:9 * n].reshape(n, 8)),
        degree=tensor(ints[9 * n:10 * n]),
        x=tensor(ints[10 * n:c].reshape(n, 9)),
        edge_index=tensor(ints[c:c + 2 * e].reshape(2, e)),
        edge_attr=tensor(ints[c + 2 * e:].reshape(e, 3)),
        pos=tensor(pos),
        spd=tensor(raw['spd']),
        pair_feat=tensor(pair_feat),
        pair_type=tensor(pair_type),
        has_graph=tensor(np.ones(1, np.bool_)),
        smiles=raw['smiles'],
        name=raw['name'],
    )
    return data
