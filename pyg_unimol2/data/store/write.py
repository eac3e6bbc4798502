r"""Writing a store: the steps that :func:`~pyg_unimol2.data.store.build_store`
(SMILES inputs) and :func:`~pyg_unimol2.data.store.build_geometry_store`
(structures) share: the build record and resume check, shards of fixed
record ranges computed in local worker processes (written atomically in a
background thread) or on a Dask cluster (:mod:`.dask_build`), and
``index.h5``, ``failures.csv`` and ``manifest.json`` made from the
shards."""
import csv
import json
import os
import platform
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import h5py
import numpy as np
from tqdm import tqdm

from ...errors import ConfigError, MissingFileError
from ..workers import ItemFailure, imap_isolated, single_thread
from .format import (FORMAT_VERSION, MAX_STORE_ATOMS, LAYOUT_COLUMNS, PTR_COLUMNS, StoreError,
                     crc32, file_crc32, molecule_crc32, shard_name)

#: One input record and what its featurization returned: the packed
#: molecule or why it failed.
Result = Tuple[Any, Union[Dict[str, Any], str]]


@dataclass
class BuildSummary:
    """What :func:`~pyg_unimol2.data.store.build_store` or
    :func:`~pyg_unimol2.data.store.build_geometry_store` did.

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


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """fsyncs :obj:`tmp` and renames it to :obj:`final` atomically."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def write_json(path: Path, obj: Any) -> None:
    """Writes :obj:`obj` to :obj:`path` atomically."""
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
        f.write('\n')
    commit(tmp, path)


def _blob(texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode() for t in texts]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    data = np.frombuffer(b''.join(encoded), np.uint8)
    return data, lengths


def write_shard(path: Path, k: int, first_record: int, num_records: int,
                molecules: List[Dict[str, Any]],
                columns: Dict[str, np.ndarray],
                failures: Dict[str, Union[np.ndarray, List[str]]],
                labels: bool) -> None:
    r"""Writes shard :obj:`k` atomically (to a ``.tmp`` file of its own,
renamed: two processes that write the same shard at once, as a Dask task
run twice may, do not mix their bytes).

    Args:
        molecules (list of dict): the packed molecules: ``graph``,
            ``num_edges``, ``pos``, ``spd``, ``smiles``, ``name``,
            ``scaffold``, ``mol_hash``, ``scaffold_hash`` and, with
            :obj:`labels`, the :data:`~.format.LABEL_COLUMNS`.
        columns (dict): per-molecule input columns (``record`` ...).
        failures (dict): per-failure columns; lists of strings become
            UTF-8 string datasets.
        labels (bool): the store holds labels.
    """
    counts = np.zeros((len(molecules), len(PTR_COLUMNS)), np.int64)
    smiles, smiles_len = _blob([m['smiles'] for m in molecules])
    names, names_len = _blob([m['name'] for m in molecules])
    scaffolds, scaffolds_len = _blob([m['scaffold'] for m in molecules])
    n_atoms = np.array([m['pos'].shape[0] for m in molecules], np.int64)
    counts[:, 0] = n_atoms
    counts[:, 1] = [m['num_edges'] for m in molecules]
    counts[:, 2] = n_atoms * n_atoms
    counts[:, 3] = [m['graph'].shape[0] for m in molecules]
    counts[:, 4], counts[:, 5], counts[:, 6] = smiles_len, names_len, \
        scaffolds_len
    ptr = np.zeros((len(molecules) + 1, len(PTR_COLUMNS)), np.int64)
    np.cumsum(counts, axis=0, out=ptr[1:])

    def cat(key, dtype, shape):
        if not molecules:
            return np.zeros(shape, dtype)
        return np.concatenate([m[key] for m in molecules]).astype(dtype)

    # Created (and so laid out) in this order: the tables a truncated file
    # must still hold to name the molecules cut off come first.
    arrays = dict(
        ptr=ptr,
        checksum=np.array([molecule_crc32(m) for m in molecules], np.uint32),
        graph=cat('graph', np.uint8, (0, )),
        pos=cat('pos', np.float32, (0, 3)),
        spd=cat('spd', np.int16, (0, )),
        smiles=smiles,
        name=names,
    )
    if labels:
        arrays.update(has_graph=cat('has_graph', np.uint8, (0, )),
                      energy=cat('energy', np.float64, (0, )),
                      forces=cat('forces', np.float32, (0, 3)),
                      charge=cat('charge', np.int16, (0, )))
    arrays.update(scaffold=scaffolds, **columns)
    arrays.update(
        mol_hash=np.array([m['mol_hash'] for m in molecules], np.uint64),
        scaffold_hash=np.array([m['scaffold_hash'] for m in molecules],
                               np.uint64))
    tmp = path.with_name(f'{path.name}.{uuid.uuid4().hex}.tmp')
    str_dtype = h5py.string_dtype('utf-8')
    with h5py.File(tmp, 'w') as f:
        f.attrs['format_version'] = FORMAT_VERSION
        f.attrs['shard'] = k
        f.attrs['first_record'] = first_record
        f.attrs['num_records'] = num_records
        f.attrs['num_molecules'] = len(molecules)
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in failures.items():
            if isinstance(value, list):
                f.create_dataset(key, data=np.array(value, dtype=object),
                                 dtype=str_dtype)
            else:
                f.create_dataset(key, data=value)
    commit(tmp, path)


# ---------------------------------------------------------------------------
# Build steps
# ---------------------------------------------------------------------------
def build_inputs(inputs: Union[str, os.PathLike, Sequence],
                 what: str, max_atoms: int, shard_size: int,
                 hint: str = '') -> List[Path]:
    """The input files of a build as paths, after checking that they exist
    (:obj:`what` names them in the error, :obj:`hint` is appended) and that
    :obj:`max_atoms` and :obj:`shard_size` are valid."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise MissingFileError(f'{what} {p}: no such file{hint}')
    if not 1 <= max_atoms <= MAX_STORE_ATOMS:
        raise ConfigError(f'max_atoms must be in 1..{MAX_STORE_ATOMS}, got '
                          f'{max_atoms}')
    if shard_size < 1:
        raise ConfigError(f'shard_size must be positive, got {shard_size}')
    return paths


def open_build(out: Path, settings: Dict, inputs: Sequence[Path],
               start: float, verbose: bool) -> Optional[BuildSummary]:
    """Records the build in ``build.json`` (or checks that it is the one
    recorded there) and returns the summary of a store that is already
    complete, :obj:`None` otherwise.

    Raises:
        StoreError: :obj:`out` holds a build with other inputs or settings.
    """
    out.mkdir(parents=True, exist_ok=True)
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
        write_json(build_path, build)

    manifest_path = out / 'manifest.json'
    if not manifest_path.exists():
        for tmp in out.glob('*.tmp'):  # Leftovers of an interrupted build.
            tmp.unlink()
        return None
    counts = json.loads(manifest_path.read_text())['counts']
    summary = BuildSummary(str(out), counts['records'], counts['molecules'],
                           counts['failures'], counts['shards'], 0, 0,
                           time.perf_counter() - start)
    if verbose:
        print(f'{out}: store complete ({summary.num_molecules} '
              f'molecules, {summary.num_shards} shards); nothing to do')
    return summary


def pending_shards(items: Iterator[Any], shard_size: int,
                   pending: Callable[[int], bool]
                   ) -> Iterator[Tuple[int, List[Any]]]:
    """``(shard, items)`` of every pending shard, in order; the items (with
    a global record ``index``) of finished shards are read and dropped."""
    current, records = None, []
    for item in items:
        k = item.index // shard_size
        if not pending(k):
            continue
        if k != current and records:
            yield current, records
            records = []
        current = k
        records.append(item)
    if records:
        yield current, records


def queued(shards: Iterator[Tuple[int, List[Any]]],
           queue: deque) -> Iterator[Any]:
    """The items of :obj:`shards`, one after the other; ``(shard, items)``
    is appended to :obj:`queue` when the first item of a shard is taken."""
    for k, records in shards:
        queue.append((k, records))
        yield from records


def run_shards(queue: deque, outputs: Iterator, bar: tqdm,
               write: Callable[[int, List[Result]], None],
               describe: Callable[[Any], str]) -> Tuple[int, int]:
    """Collects the :obj:`outputs` of the items of the shards in
    :obj:`queue` (see :func:`queued`), in order, and calls
    ``write(shard, results)`` for each finished shard in a background
    thread while the workers go on with the next. A worker failure becomes
    the reason ``'REASON (describe(item))'``. Returns the numbers of shards
    written and of items featurized."""
    collected: List[Result] = []
    writing: Optional[Future] = None
    written = items = 0
    with ThreadPoolExecutor(1) as writer:
        for output in outputs:
            k, records = queue[0]
            record = records[len(collected)]
            if isinstance(output, ItemFailure):
                output = f'{output.reason} ({describe(record)})'
            collected.append((record, output))
            items += 1
            bar.update()
            if len(collected) == len(records):
                queue.popleft()
                if writing is not None:
                    writing.result()
                writing = writer.submit(write, k, collected)
                written += 1
                collected = []
        if writing is not None:
            writing.result()
    return written, items


def compute_shards(out: Path, shards: Iterator[Tuple[int, List[Any]]],
                   job: Callable[[Any], Union[Dict[str, Any], str]],
                   write: Callable[[Path, int, List[Result]], None],
                   describe: Callable[[Any], str], bar: tqdm, *,
                   workers: int, chunksize: int,
                   time_limit: Optional[float], lookahead: int,
                   client: Any = None) -> Tuple[int, int]:
    """Featurizes the items of :obj:`shards` (see :func:`pending_shards`)
    with :obj:`job` and writes each shard with ``write(out, shard,
    results)``: in crash-safe local worker processes
    (:func:`~pyg_unimol2.data.workers.imap_isolated` with :obj:`workers`,
    :obj:`chunksize`, :obj:`time_limit` and :obj:`lookahead`, see
    :func:`run_shards`) or, with a :class:`distributed.Client`
    :obj:`client`, as one task per shard on its Dask cluster
    (:func:`~.dask_build.dask_shards`). Returns the numbers of shards
    written and of items featurized."""
    if client is not None:
        from .dask_build import dask_shards
        return dask_shards(client, out, shards, job, write, describe, bar,
                           chunksize=chunksize, time_limit=time_limit)
    queue: deque = deque()
    outputs = imap_isolated(job, queued(shards, queue), workers,
                            chunksize=chunksize, time_limit=time_limit,
                            initializer=single_thread, lookahead=lookahead)
    with closing(outputs):
        return run_shards(queue, outputs, bar, partial(write, out), describe)


def library_versions() -> Dict[str, str]:
    """Versions of the libraries a store depends on, as the manifest
    records them."""
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


def _strings(ds: h5py.Dataset) -> np.ndarray:
    return ds.asstr()[:] if h5py.check_string_dtype(ds.dtype) else ds[:]


def finalize(out: Path, inputs: Sequence[Path], file_records: List[int],
             settings: Dict, num_shards: int, labels: Sequence[str],
             failure_columns: Sequence[str]) -> Dict:
    """Writes ``index.h5``, ``failures.csv`` and, last, ``manifest.json``
    from the shards.

    Args:
        file_records (list of int): records of each input file.
        labels (sequence of str): the labels of the store (``()`` or
            :data:`~.format.LABELS`), recorded in the manifest.
        failure_columns (sequence of str): the shard datasets that make a
            row of ``failures.csv`` after the input file, in order
            (``failure_reason`` last).
    """
    shard_ptr = np.zeros(num_shards + 1, np.int64)
    layout = np.full((num_shards, len(LAYOUT_COLUMNS)), -1, np.int64)
    ptr_checksum = np.zeros(num_shards, np.uint32)
    num_atoms, mol_hash, scaffold_hash, shard_info = [], [], [], []
    failures = []
    totals = dict(atoms=0, bonds=0, pairs=0)
    known = dict(with_energy=0, with_forces=0)
    file_start = np.cumsum([0] + list(file_records))
    for k in range(num_shards):
        with h5py.File(out / shard_name(k), 'r') as f:
            if f.attrs['format_version'] != FORMAT_VERSION:
                raise StoreError(f'{out / shard_name(k)}: format version '
                                 f'{f.attrs["format_version"]}')
            ptr = f['ptr'][:]
            ptr_checksum[k] = crc32(ptr)
            for c, key in enumerate(LAYOUT_COLUMNS):
                if key not in f:
                    continue
                offset = f[key].id.get_offset()
                if f[key].size and offset is None:
                    raise StoreError(f'{key} of {shard_name(k)} is not '
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
            if labels and counts.shape[0]:
                known['with_energy'] += int(np.isfinite(f['energy'][:]).sum())
                first_atoms = f['forces'][:, 0][ptr[:-1, 0]]
                known['with_forces'] += int(np.isfinite(first_atoms).sum())
            columns = [_strings(f[key]) for key in failure_columns]
            for rec, *row in zip(f['failure_record'][:], *columns):
                file = int(np.searchsorted(file_start, rec, 'right') - 1)
                failures.append((str(inputs[file]), *row))
            shard_info.append(dict(
                file=shard_name(k), first_record=int(f.attrs['first_record']),
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
    commit(tmp, out / 'index.h5')
    index_file = dict(path='index.h5',
                      bytes=(out / 'index.h5').stat().st_size,
                      crc32=file_crc32(out / 'index.h5'))

    tmp = out / 'failures.csv.tmp'
    with open(tmp, 'w', newline='') as fh:
        writer = csv.writer(fh)
        writer.writerow(['file'] + [c[len('failure_'):]
                                    for c in failure_columns])
        writer.writerows(failures)
    commit(tmp, out / 'failures.csv')

    if labels:
        totals.update(known)
    manifest = dict(
        format='pyg_unimol2 sharded HDF5 molecule store',
        format_version=FORMAT_VERSION,
        settings=settings,
        labels=list(labels),
        versions=library_versions(),
        inputs=[dict(path=str(p), records=n)
                for p, n in zip(inputs, file_records)],
        counts=dict(records=int(sum(file_records)),
                    molecules=int(shard_ptr[-1]), failures=len(failures),
                    shards=num_shards, scaffolds=int(scaffold_count.shape[0]),
                    **totals),
        files=dict(index=index_file, failures='failures.csv'),
        shards=shard_info,
    )
    write_json(out / 'manifest.json', manifest)
    return manifest


def finish_build(out: Path, inputs: Sequence[Path], file_records: List[int],
                 settings: Dict, num_shards: int, labels: Sequence[str],
                 failure_columns: Sequence[str], built_shards: int,
                 built_records: int, start: float, featurize_seconds: float,
                 workers: int, scheduler: Optional[str], noun: str,
                 failure_line: Callable[[List[str]], str],
                 verbose: bool) -> BuildSummary:
    """Finalizes a built store (:func:`finalize`) and returns its summary;
    if :obj:`verbose`, prints it (``{out}: N {noun} in S shards, ...``,
    with the featurization rate) and the first failures, each as
    ``failure_line(row)`` of ``failures.csv``.

    Args:
        built_shards (int): shards written by this call (not resumed).
        built_records (int): records featurized by this call.
        start (float): :func:`time.perf_counter` at the start of the build.
        featurize_seconds (float): time spent featurizing.
        workers (int): local worker processes (reported when
            :obj:`scheduler` is :obj:`None`).
        scheduler (str, optional): the Dask scheduler address.
    """
    manifest = finalize(out, inputs, file_records, settings, num_shards,
                        labels, failure_columns)
    counts = manifest['counts']
    summary = BuildSummary(str(out), counts['records'], counts['molecules'],
                           counts['failures'], num_shards, built_shards,
                           built_records, time.perf_counter() - start)
    if verbose:
        rate = built_records / featurize_seconds if featurize_seconds else 0
        where = f'{workers} workers' if scheduler is None else \
            f'Dask cluster {scheduler}'
        print(f'{out}: {counts["molecules"]} {noun} in {num_shards} shards, '
              f'{counts["failures"]} failures; featurized {built_records} '
              f'records in {featurize_seconds:.1f} s ({rate:.1f} mol/s, '
              f'{where})')
        print_failures(out, failure_line)
    return summary


def print_failures(out: Path, line: Callable[[List[str]], str],
                   limit: int = 20) -> None:
    """Prints the first :obj:`limit` rows of ``failures.csv``, each as
    ``line(row)``."""
    with open(out / 'failures.csv', newline='') as f:
        rows = list(csv.reader(f))[1:]
    if not rows:
        return
    print(f'{len(rows)} records skipped (all in {out / "failures.csv"}):')
    for row in rows[:limit]:
        print(f'  {line(row)}')
    if len(rows) > limit:
        print(f'  ... and {len(rows) - limit} more')
