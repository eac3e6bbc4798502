r"""Computing the shards of a store build on a Dask cluster
(``build_store(..., scheduler=ADDRESS)``, ``unimol2 build-hdf5 --scheduler
ADDRESS``): the builders connect with :func:`dask_client` before they read
the inputs, and :func:`~.write.compute_shards` then runs
:func:`dask_shards` in place of local worker processes.

The client (the process that builds) reads the inputs and skips the
finished shards as a local build does, then submits one task per pending
shard that carries the shard's records. A task featurizes them one after
the other in its Dask worker, with the job of a local build, and writes the
shard file itself into the store directory (atomically, a ``.tmp`` file of
its own renamed). Everything else (``build.json`` and the resume check,
``index.h5``, ``failures.csv``, ``manifest.json``, the progress bar) is the
local builder's, so a store built, or resumed, on a cluster is byte for
byte the one a local build writes.

What the cluster must provide:

* **A shared filesystem.** Workers see the store directory at the client's
  absolute path (the usual case on SLURM clusters: a home, project or
  scratch filesystem mounted on every node). A task fails with
  :class:`~.format.StoreError` when the directory does not exist on its
  node, and the client when a shard it was told is written does not
  appear within :data:`VISIBLE_SECONDS`.
* **The same software.** A task first checks that its worker runs the
  versions of pyg_unimol2, RDKit, NumPy, h5py, HDF5 and Python that the
  client records in the manifest (another RDKit may embed other
  conformers) and fails with :class:`~.format.StoreError` naming the
  difference otherwise.

Failures: a worker that dies (killed, its node lost or preempted) costs its
running task only: Dask runs it again on another worker, and the shard it
writes is the same. A task that kills more workers than
``distributed.scheduler.allowed-failures`` (default 3), as a molecule that
crashes RDKit would, raises :class:`distributed.KilledWorker`; that shard is
then computed on the client in crash-safe worker processes, as a local
build does it, so the molecule becomes the same failure (``'worker crashed
(...)'``). Inside a task only RDKit's embedding timeout bounds a molecule
(as with ``workers=1``): Dask does not kill a task that runs long.

At most twice as many shards as the cluster has worker threads (at least
:data:`MIN_IN_FLIGHT`) are submitted and unfinished at a time, so the
client and the scheduler hold the records of a bounded number of shards;
the bound follows the cluster as workers join or leave.
"""
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from tqdm import tqdm

from ...errors import ConfigError
from .format import StoreError, shard_name
from .write import Result, compute_shards, library_versions

__all__ = ['dask_client', 'dask_shards']

#: Seconds a shard written by a worker may take to appear on the client.
VISIBLE_SECONDS = 60.0
#: Shards in flight while the cluster has (almost) no worker threads.
MIN_IN_FLIGHT = 4
#: Seconds between looks at the cluster while no shard finishes.
_POLL_SECONDS = 2.0

Shard = Tuple[int, List[Any]]


@contextmanager
def dask_client(address: Optional[str]) -> Iterator[Any]:
    """A :class:`distributed.Client` of the scheduler at :obj:`address`,
    closed at the end of the block (which releases the tasks it has not
    finished); :obj:`None` when :obj:`address` is.

    Raises:
        ConfigError: ``dask.distributed`` is not installed, or no scheduler
            answers at :obj:`address` within
            ``distributed.comm.timeouts.connect`` (default 30 s).
    """
    if address is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError('building on a Dask cluster (--scheduler) needs '
                          'dask.distributed: pip install '
                          '"dask[distributed]"') from None
    if not address.strip():
        raise ConfigError('--scheduler needs the address of a Dask '
                          'scheduler, e.g. tcp://HOST:8786')
    try:
        client = Client(address)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise ConfigError(
            f'no Dask scheduler at {address!r} ({type(e).__name__}: {e}); '
            f'start one (dask scheduler, LocalCluster, SLURMCluster) and '
            f'give its address, e.g. tcp://HOST:8786') from None
    with client:
        yield client


def _shard_task(out: Path, k: int, records: List[Any],
                job: Callable[[Any], Any],
                write: Callable[[Path, int, List[Result]], None],
                versions: Dict[str, str]) -> str:
    """Dask task: featurizes the records of shard :obj:`k` and writes the
    shard into :obj:`out`; returns the host name of the worker."""
    host = socket.gethostname()
    mine = library_versions()
    if mine != versions:
        changed = ', '.join(f'{key} {mine.get(key)} (client: {version})'
                            for key, version in versions.items()
                            if mine.get(key) != version)
        raise StoreError(f'the Dask worker on {host} runs {changed}; '
                         f'install the versions of the client on every '
                         f'worker (conformers depend on them)')
    if not out.is_dir():
        raise StoreError(f'{out}: no such directory on the Dask worker on '
                         f'{host}; the workers write the shards there and '
                         f'must see the store directory at the same path '
                         f'as the client (a shared filesystem)')
    write(out, k, [(record, job(record)) for record in records])
    return host


def _await_shard(path: Path, host: str) -> None:
    """Waits until the shard that a worker on :obj:`host` wrote to
    :obj:`path` is visible here (a shared filesystem may show a new file
    late)."""
    deadline = time.monotonic() + VISIBLE_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise StoreError(
                f'{path}: written by the Dask worker on {host} but not '
                f'visible here after {VISIBLE_SECONDS:g} s; the workers '
                f'must share the store directory with the client (the same '
                f'path on a shared filesystem)')
        time.sleep(0.5)


def dask_shards(client: Any, out: Path, shards: Iterator[Shard],
                job: Callable[[Any], Any],
                write: Callable[[Path, int, List[Result]], None],
                describe: Callable[[Any], str], bar: tqdm, *,
                chunksize: int,
                time_limit: Optional[float]) -> Tuple[int, int]:
    """Computes :obj:`shards` as one task each on the Dask cluster of
    :obj:`client` (see :func:`dask_client`): ``write(out, shard, [(item,
    job(item)), ...])`` in a worker. A shard whose task raises
    :class:`distributed.KilledWorker` is computed locally by
    :func:`~.write.compute_shards` (with :obj:`describe`,
    :obj:`chunksize` and :obj:`time_limit`, in two processes). Returns the
    numbers of shards written and of items featurized; :obj:`bar` advances
    by a shard's items when it is done.

    Raises:
        StoreError: a worker runs other library versions or does not share
            the store directory.
    """
    from distributed import KilledWorker, wait
    from distributed import TimeoutError as WaitTimeout

    directory = out.resolve()  # Workers have other working directories.
    versions = library_versions()
    running: Dict[Any, Shard] = {}
    written = items = 0
    while True:
        threads = sum(client.nthreads().values())
        while len(running) < max(2 * threads, MIN_IN_FLIGHT):
            shard = next(shards, None)
            if shard is None:
                break
            future = client.submit(_shard_task, directory, *shard, job,
                                   write, versions, pure=False)
            running[future] = shard
        if not running:
            break
        try:
            done = wait(list(running), timeout=_POLL_SECONDS,
                        return_when='FIRST_COMPLETED').done
        except WaitTimeout:
            continue
        for future in done:
            k, records = running.pop(future)
            try:
                host = future.result()
            except KilledWorker:
                compute_shards(out, iter([(k, records)]), job, write,
                               describe, bar, workers=2, chunksize=chunksize,
                               time_limit=time_limit, lookahead=len(records))
            else:
                _await_shard(out / shard_name(k), host)
                bar.update(len(records))
            written += 1
            items += len(records)
    for tmp in out.glob('shard_*.tmp'):  # Of tasks killed while writing.
        tmp.unlink()
    return written, items
