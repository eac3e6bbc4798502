r"""Building a store from SMILES files: :func:`build_store` embeds one
conformer per molecule (ETKDGv3 + MMFF94, exactly as
:func:`~pyg_unimol2.data.featurize.from_smiles` with the store's seed) in
crash-safe worker processes (:func:`~pyg_unimol2.data.workers.imap_isolated`:
a molecule that crashes its worker twice or exceeds the time limit is a
failure, the others are unaffected) or on a Dask cluster
(:mod:`.dask_build`), to the same bytes."""
import csv
import gzip
import io
import math
import os
import time
import zlib
from functools import partial
from pathlib import Path
from typing import (Dict, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import numpy as np
from rdkit import Chem, rdBase
from tqdm import tqdm

from ...errors import InputError
from ..errors import FeaturizationError
from ..featurize import TIME_LIMIT, _smiles_features
from ..splits import murcko_scaffold
from .dask_build import dask_client
from .format import (FORMAT_VERSION, hash64, pack_graph,
                     shard_name)
from .write import (BuildSummary, build_inputs, Result, compute_shards,
                    finish_build, open_build, pending_shards, write_shard)

__all__ = ['build_store', 'read_records', 'Record']

_SMILES_COLUMNS = ('smiles', 'smi', 'canonical_smiles', 'isomeric_smiles')
_NAME_COLUMNS = ('name', 'id', 'zinc_id', 'mol_id', 'title')
#: Shard datasets of a failed record (``failures.csv`` columns).
FAILURE_COLUMNS = ('failure_line', 'failure_smiles', 'failure_reason')

PathLike = Union[str, os.PathLike]


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
            packed = pack_graph(features, smiles)
            mol = Chem.MolFromSmiles(smiles)
            canonical = Chem.MolToSmiles(mol) if mol is not None else smiles
            scaffold = murcko_scaffold(smiles)
    except FeaturizationError as e:
        return str(e)
    except Exception as e:  # Unexpected RDKit errors skip the molecule too.
        return f'{type(e).__name__}: {e} ({smiles!r})'
    packed.update(scaffold=scaffold, mol_hash=hash64(canonical),
                  scaffold_hash=hash64(scaffold))
    return packed


def _write_shard(out: Path, k: int, results: List[Result]) -> None:
    """Writes the shard of :obj:`results` (records with their output)."""
    mols = [(r, o) for r, o in results if not isinstance(o, str)]
    fails = [(r, o) for r, o in results if isinstance(o, str)]
    for r, m in mols:
        m.update(smiles=r.smiles, name=r.name)
    write_shard(
        out / shard_name(k), k, results[0][0].index, len(results),
        [m for _, m in mols],
        dict(record=np.array([r.index for r, _ in mols], np.int64),
             line=np.array([r.line for r, _ in mols], np.int64)),
        dict(failure_record=np.array([r.index for r, _ in fails], np.int64),
             failure_line=np.array([r.line for r, _ in fails], np.int64),
             failure_smiles=[r.smiles for r, _ in fails],
             failure_reason=[reason for _, reason in fails]),
        labels=False)


def build_store(inputs: Union[PathLike, Sequence[PathLike]],
                out_dir: PathLike, *, workers: Optional[int] = None,
                shard_size: int = 10_000, seed: int = 0,
                limit: Optional[int] = None, remove_hs: bool = True,
                max_atoms: int = 256, optimize: bool = True,
                chunksize: int = 8,
                time_limit: Optional[float] = TIME_LIMIT,
                scheduler: Optional[str] = None,
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
    :obj:`time_limit`, :obj:`scheduler` and :obj:`progress` may change
    freely: a store built (or resumed) on a Dask cluster is byte for byte
    the one a local build writes.

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
        scheduler (str, optional): address of a Dask scheduler
            (``tcp://HOST:8786``): featurize one shard per task on its
            cluster instead of in :obj:`workers` local processes; the
            workers must see :obj:`out_dir` at the same path (a shared
            filesystem) and run the same library versions, and only
            RDKit's embedding timeout applies there (see
            :mod:`~pyg_unimol2.data.store.dask_build`); :obj:`workers` is
            then not used. (default: :obj:`None`)
        progress (bool, optional): show a progress bar (molecules/s).
            (default: :obj:`True`)
        verbose (bool, optional): print a summary. (default: :obj:`True`)

    Returns:
        BuildSummary: counts and the throughput of this call.
    """
    start = time.perf_counter()
    inputs = build_inputs(inputs, 'SMILES file', max_atoms, shard_size,
                          ' (give .smi, .csv or .tsv files, optionally '
                          'gzipped)')
    out = Path(out_dir)
    settings = dict(format_version=FORMAT_VERSION, seed=seed,
                    shard_size=shard_size, limit=limit, remove_hs=remove_hs,
                    max_atoms=max_atoms, optimize=optimize,
                    conformer='ETKDGv3 + MMFF94' if optimize else 'ETKDGv3')
    complete = open_build(out, settings, inputs, start, verbose)
    if complete is not None:
        return complete
    with dask_client(scheduler) as client:  # None: local processes
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
                   if not (out / shard_name(k)).exists()]
        built_records = sum(min(shard_size, num_records - k * shard_size)
                            for k in pending)
        if verbose and pending and len(pending) < num_shards:
            print(f'{out}: resuming, {num_shards - len(pending)} of '
                  f'{num_shards} shards already built')
        job = partial(_featurize_record, seed=seed, remove_hs=remove_hs,
                      max_atoms=max_atoms, optimize=optimize,
                      time_limit=time_limit)
        workers = min(workers or os.cpu_count() or 1, max(built_records, 1))
        t0 = time.perf_counter()
        if pending:
            shards = pending_shards(_iter_records(inputs, limit), shard_size,
                                    set(pending).__contains__)
            with tqdm(total=built_records, unit='mol', desc='Building store',
                      disable=not progress, smoothing=0.05) as bar:
                compute_shards(out, shards, job, _write_shard,
                               lambda record: repr(record.smiles), bar,
                               workers=workers, chunksize=chunksize,
                               time_limit=time_limit, lookahead=shard_size,
                               client=client)
        featurize_seconds = time.perf_counter() - t0
    return finish_build(out, inputs, file_records, settings, num_shards, (),
                        FAILURE_COLUMNS, len(pending), built_records, start,
                        featurize_seconds, workers, scheduler, 'molecules',
                        lambda row: f'{Path(row[0]).name}:{row[1]}: {row[3]}',
                        verbose)


