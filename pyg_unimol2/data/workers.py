r"""Crash-safe worker processes for per-item jobs.

:func:`imap_isolated` is the process pool of the package: molecule
featurization (:func:`~pyg_unimol2.data.featurize.featurize_smiles`), the
HDF5 store builder (:func:`~pyg_unimol2.data.store.build_store`) and QM9
processing run their molecules through it. Like
:meth:`multiprocessing.pool.Pool.imap` it maps a job over items in worker
processes and yields one result per item in input order, but a worker that
dies (a segmentation fault in RDKit, the OOM killer, any signal or exit) or
that spends longer than a time limit on one item costs that item only:

* The parent knows which items each worker holds and has not reported yet:
  a worker reports every item as soon as it is done, also within a chunk.
* When a worker dies, the items it had not reported are run again, each
  alone in a fresh worker process. An item that kills that process too
  yields an :class:`ItemFailure` (``'worker crashed (killed by signal 11,
  SIGSEGV)'``); it is not tried a third time.
* An item that runs longer than the time limit yields an
  :class:`ItemFailure` (``'timed out after 300 s'``): its worker is killed,
  and the other items it held are run again as above.
* The parent only waits on the workers' pipes and process sentinels
  (:func:`multiprocessing.connection.wait`, with the nearest time limit as
  timeout), never on one worker, so a dead or stalled worker cannot hang
  it. Workers are stopped when the iteration ends, raises, is interrupted
  (:class:`KeyboardInterrupt`) or is closed.

Workers are forked where the platform allows it (they start in milliseconds
and need not import the job's module), spawned elsewhere.
"""
import multiprocessing
import pickle
import signal
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import (Any, Callable, Deque, Dict, Iterable, Iterator, List,
                    NamedTuple, Optional, TypeVar, Union)

import torch

__all__ = ['imap_isolated', 'ItemFailure', 'single_thread']

T = TypeVar('T')
R = TypeVar('R')

_CONTEXT = multiprocessing.get_context(
    'fork' if 'fork' in multiprocessing.get_all_start_methods() else None)
_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Seconds a stopped worker may take to exit before it is killed.
_GRACE = 5.0


class ItemFailure(NamedTuple):
    """The result of an item that crashed a worker twice or that ran past
    the time limit of :func:`imap_isolated`."""
    reason: str  #: ``'worker crashed (...)'`` or ``'timed out after N s'``


class RemoteTraceback(Exception):
    """The traceback, in the worker, of an exception that a job raised; set
    as the ``__cause__`` of the exception re-raised in the parent."""


def single_thread() -> None:
    """Worker initializer: one PyTorch thread per process, so that workers
    do not oversubscribe the cores."""
    torch.set_num_threads(1)


def imap_isolated(job: Callable[[T], R], items: Iterable[T], workers: int, *,
                  chunksize: int = 1, time_limit: Optional[float] = None,
                  initializer: Optional[Callable[[], None]] = None,
                  lookahead: Optional[int] = None
                  ) -> Iterator[Union[R, ItemFailure]]:
    r"""Maps :obj:`job` over :obj:`items` in worker processes that may
    crash, yielding the results in input order.

    Each item yields ``job(item)``, or an :class:`ItemFailure` when the item
    crashed a worker twice (once among other items, once alone in a fresh
    worker) or when one run of it took longer than :obj:`time_limit`; every
    other item is unaffected (see :mod:`pyg_unimol2.data.workers`). An
    exception raised by :obj:`job` is not a failure of the item: it is
    re-raised here (its traceback in the worker as ``__cause__``) after the
    workers are stopped, so jobs should return their expected errors.

    Items are read lazily, a chunk at a time, as workers need them. The
    iterator starts the workers on its first step and stops them when it is
    exhausted, raises or is closed: to stop early, close it (e.g. with
    :func:`contextlib.closing`).

    Args:
        job (callable): a function of one item; with spawned workers (no
            ``fork`` on the platform) it and the items must be picklable.
            Results are sent back pickled.
        items (Iterable): the items, read once, in order.
        workers (int): number of worker processes. ``1`` (or less) runs
            :obj:`job` in the calling process instead: no isolation, no
            :obj:`time_limit` and no :obj:`initializer`.
        chunksize (int, optional): items sent to a worker at once (each is
            still reported on its own). (default: :obj:`1`)
        time_limit (float, optional): seconds one item may run before its
            worker is killed and the item fails.
            (default: :obj:`None`, no limit)
        initializer (callable, optional): called without arguments at the
            start of every worker process (e.g. :func:`single_thread`).
            (default: :obj:`None`)
        lookahead (int, optional): at most this many items are taken beyond
            the oldest item not yet yielded, which bounds the results held
            back while a slow item is pending. (default: :obj:`None`, no
            bound)

    Returns:
        Iterator: one result (or :class:`ItemFailure`) per item, in input
        order.
    """
    if chunksize < 1:
        raise ValueError(f'chunksize must be positive, got {chunksize}')
    if time_limit is not None and time_limit <= 0:
        raise ValueError(f'time_limit must be positive, got {time_limit}')
    if lookahead is not None and lookahead < 1:
        raise ValueError(f'lookahead must be positive, got {lookahead}')
    if workers <= 1:
        return (job(item) for item in items)
    return _Pool(job, items, workers, chunksize, time_limit, initializer,
                 lookahead).results()


# ---------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------
def _error(e: Exception) -> tuple:
    """:obj:`e` and its traceback, as sent to the parent; an exception that
    does not survive pickling is replaced by a :class:`RuntimeError`."""
    text = traceback.format_exc()
    try:
        pickle.loads(pickle.dumps(e, _PROTOCOL))
    except Exception:
        e = RuntimeError(f'{type(e).__name__}: {e}')
    return e, text


def _work(conn: Connection, job: Callable, initializer: Optional[Callable],
          inherited: List[Connection]) -> None:
    """Main loop of a worker process: runs the items of every batch it
    receives and reports each as ``(index, True, result)`` or ``(index,
    False, (exception, traceback))``; an initializer error is reported with
    index :obj:`None`. Ends when the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's.
    for other in inherited:  # Forked copies of the parent's pipe ends.
        other.close()
    if initializer is not None:
        try:
            initializer()
        except Exception as e:
            conn.send_bytes(pickle.dumps((None, False, _error(e)), _PROTOCOL))
            return
    while True:
        try:
            batch = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        for index, item in batch:
            try:
                message = pickle.dumps((index, True, job(item)), _PROTOCOL)
            except Exception as e:  # The job failed or its result does not
                message = pickle.dumps((index, False, _error(e)), _PROTOCOL)
            try:
                conn.send_bytes(message)
            except OSError:  # The parent is gone.
                return


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------
class _Worker:
    """A worker process as the parent sees it."""
    __slots__ = ('process', 'conn', 'solo', 'held', 'since', 'timed_out')

    def __init__(self, process: multiprocessing.Process, conn: Connection,
                 solo: bool) -> None:
        self.process = process
        self.conn: Optional[Connection] = conn  # None once closed
        self.solo = solo  # runs one retried item, then stops
        self.held: Deque[int] = deque()  # items sent, not reported, in order
        self.since = time.monotonic()  # start of the oldest held item
        self.timed_out: Optional[int] = None  # item it was killed for

    def close(self) -> None:
        """Closes the pipe: an idle worker then exits."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _crash_reason(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = 'unknown signal'
        return f'worker crashed (killed by signal {-exitcode}, {name})'
    return f'worker crashed (exit code {exitcode})'


class _Pool:
    """State of one :func:`imap_isolated` run (single-threaded: everything
    happens in the thread that iterates :meth:`results`)."""
    def __init__(self, job: Callable, items: Iterable, workers: int,
                 chunksize: int, time_limit: Optional[float],
                 initializer: Optional[Callable],
                 lookahead: Optional[int]) -> None:
        self.job, self.initializer = job, initializer
        self.size, self.chunksize = workers, chunksize
        self.time_limit, self.lookahead = time_limit, lookahead
        self.items = iter(items)
        self.exhausted = False
        self.taken = 0  # items read from the iterable
        self.yielded = 0  # next item to yield
        self.values: Dict[int, Any] = {}  # items taken and not reported
        self.done: Dict[int, Any] = {}  # results not yielded yet
        self.retry: Deque[int] = deque()  # items to run alone
        self.workers: List[_Worker] = []

    def results(self) -> Iterator:
        """The event loop: yields the results in input order."""
        graceful = False
        try:
            while True:
                self._dispatch()
                if self.yielded in self.done:
                    result = self.done.pop(self.yielded)
                    self.yielded += 1
                    yield result
                    self._poll(block=False)
                elif self.exhausted and self.yielded == self.taken:
                    graceful = True
                    return
                else:
                    self._poll(block=True)
        finally:
            self._stop(graceful)

    # Dispatch -------------------------------------------------------------
    def _take(self) -> List[int]:
        """Reads the next chunk of items from the iterable."""
        count = self.chunksize
        if self.lookahead is not None:
            count = min(count, self.yielded + self.lookahead - self.taken)
        chunk = []
        while len(chunk) < count and not self.exhausted:
            try:
                item = next(self.items)
            except StopIteration:
                self.exhausted = True
                break
            self.values[self.taken] = item
            chunk.append(self.taken)
            self.taken += 1
        return chunk

    def _dispatch(self) -> None:
        """Starts a fresh worker for each retried item while slots are free,
        otherwise gives chunks to idle workers (starting workers in free
        slots), and closes the idle workers that have nothing left to do."""
        while self.retry and len(self.workers) < self.size:
            self._send(self._start(solo=True), [self.retry.popleft()])
        while not self.retry:
            idle = next((w for w in self.workers if w.conn is not None and
                         not w.held and not w.solo), None)
            if idle is None and len(self.workers) >= self.size:
                break
            chunk = self._take()
            if not chunk:
                break
            self._send(idle or self._start(solo=False), chunk)
        for w in self.workers:  # Retries need the slots of idle workers.
            if w.conn is not None and not w.held and (
                    w.solo or self.retry or self.exhausted):
                w.close()

    def _start(self, solo: bool) -> _Worker:
        """Starts a worker process; a forked one closes its copies of the
        parent's pipe ends, so that it sees its own pipe close."""
        conn, child = _CONTEXT.Pipe()
        inherited = []
        if _CONTEXT.get_start_method() == 'fork':
            inherited = [conn] + [w.conn for w in self.workers
                                  if w.conn is not None]
        process = _CONTEXT.Process(
            target=_work, args=(child, self.job, self.initializer, inherited),
            name='imap_isolated-worker', daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, conn, solo)
        self.workers.append(worker)
        return worker

    def _send(self, worker: _Worker, indices: List[int]) -> None:
        """Sends items to an idle (or new) worker, which is waiting for
        them and sends nothing meanwhile: a large batch cannot deadlock the
        two ends of the pipe."""
        if not worker.held:
            worker.since = time.monotonic()
        worker.held.extend(indices)
        batch = [(i, self.values[i]) for i in indices]
        try:
            worker.conn.send_bytes(pickle.dumps(batch, _PROTOCOL))
        except OSError:  # The worker is dead: its sentinel tells.
            pass

    # Reports and deaths ---------------------------------------------------
    def _poll(self, block: bool) -> None:
        """Reads the reports of the workers, reaps the dead ones and kills
        those past the time limit; with :obj:`block`, first waits until one
        of these happens."""
        waitables = [w.conn for w in self.workers if w.conn is not None]
        waitables += [w.process.sentinel for w in self.workers]
        if block and not waitables:
            raise RuntimeError('imap_isolated: items pending without '
                               'workers')  # pragma: no cover - a bug
        ready = set(wait(waitables, self._timeout() if block else 0))
        for w in list(self.workers):
            if w.conn is not None and w.conn in ready:
                self._read(w)
            if w.process.sentinel in ready:
                self._reap(w)
        if self.time_limit is not None:
            now = time.monotonic()
            for w in self.workers:
                if w.held and w.timed_out is None and \
                        now - w.since >= self.time_limit:
                    w.timed_out = w.held[0]
                    w.process.kill()

    def _timeout(self) -> Optional[float]:
        """Seconds until the nearest time limit, :obj:`None` if none."""
        if self.time_limit is None:
            return None
        starts = [w.since for w in self.workers
                  if w.held and w.timed_out is None]
        if not starts:
            return None
        return max(min(starts) + self.time_limit - time.monotonic(), 0.0)

    def _read(self, worker: _Worker) -> None:
        """Handles every report waiting in the pipe of :obj:`worker`."""
        try:
            while worker.conn.poll():
                index, ok, payload = pickle.loads(worker.conn.recv_bytes())
                if not ok:
                    error, text = payload
                    error.__cause__ = RemoteTraceback(text)
                    if index is None:
                        raise RuntimeError('imap_isolated: the worker '
                                           'initializer failed') from error
                    raise error
                worker.held.popleft()
                del self.values[index]
                self.done[index] = payload
                worker.since = time.monotonic()
        except (EOFError, OSError):  # The worker is gone.
            worker.close()

    def _reap(self, worker: _Worker) -> None:
        """Removes a worker that exited; the items it had not reported are
        retried alone, or fail if it already ran a retry or was killed for
        them."""
        if worker.conn is not None:
            self._read(worker)  # Reports sent before it exited.
        worker.close()
        worker.process.join()
        self.workers.remove(worker)
        for index in worker.held:
            if index == worker.timed_out:
                reason = f'timed out after {self.time_limit:g} s'
            elif worker.solo:
                reason = _crash_reason(worker.process.exitcode)
            else:
                self.retry.append(index)
                continue
            del self.values[index]
            self.done[index] = ItemFailure(reason)

    def _stop(self, graceful: bool) -> None:
        """Stops every worker: idle ones exit when their pipe closes; busy
        ones (and any left after :data:`_GRACE` seconds) are terminated,
        then killed. All are reaped (no zombies)."""
        for w in self.workers:
            w.close()
        if graceful:
            deadline = time.monotonic() + _GRACE
            for w in self.workers:
                w.process.join(max(deadline - time.monotonic(), 0.0))
        for w in self.workers:
            if w.process.exitcode is None:
                w.process.terminate()
        for w in self.workers:
            w.process.join(_GRACE)
            if w.process.exitcode is None:
                w.process.kill()
                w.process.join()
        self.workers.clear()
