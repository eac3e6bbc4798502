"""Crash-safe worker processes: real workers die (SIGKILL, exit, segfault,
time limit) and every other item still comes back, in order; featurization
and the store builder give the results of an undisturbed run."""
import ctypes
import faulthandler
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable, List

import pytest
import torch
from conftest import read_moses
from test_store import SHARD_SIZE, assert_same_store, write_inputs

from pyg_unimol2.data import featurize_smiles
from pyg_unimol2.data.store import build_store
from pyg_unimol2.data.workers import (ItemFailure, RemoteTraceback,
                                      imap_isolated)

ROOT = Path(__file__).resolve().parents[2]
#: A test that takes longer has hung: it fails instead of blocking CI.
GUARD_S = 150


@pytest.fixture(autouse=True)
def hang_guard():
    def expire(signum, frame):
        raise TimeoutError(f'test still running after {GUARD_S} s (hang?)')

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(GUARD_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


#: This process's children from before the test (e.g. the resource tracker
#: of an earlier test's spawned processes), which a pool did not start.
_EARLIER: set = set()


@pytest.fixture(autouse=True)
def earlier_children():
    _EARLIER.clear()
    _EARLIER.update(children(all_of_them=True))
    yield


def children(all_of_them: bool = False) -> List[int]:
    """Processes (zombies included) whose parent is this process, except
    those it had before the test (unless :obj:`all_of_them`)."""
    found = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
        except OSError:  # Exited meanwhile.
            continue
        if int(stat.rsplit(')', 1)[1].split()[1]) == os.getpid():
            found.append(int(entry.name))
    return found if all_of_them else \
        [pid for pid in found if pid not in _EARLIER]


def logged(x: int, log: Path) -> None:
    with open(log, 'a') as f:
        f.write(f'{x}\n')


def runs(log: Path) -> Counter:
    """How many times each item was started."""
    return Counter(int(line) for line in log.read_text().split())


def die(how: str) -> None:
    if how == 'SIGKILL':
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == 'exit':
        os._exit(3)
    else:
        faulthandler.disable()  # No traceback dump in the test output.
        ctypes.string_at(0)  # SIGSEGV


def square_or_die(x: int, bad: int, how: str, log: Path) -> int:
    logged(x, log)
    if x == bad:
        die(how)
    return x * x


def square_or_sleep(x: int, slow: int, log: Path) -> int:
    logged(x, log)
    time.sleep(60 if x == slow else 0.01)
    return x * x


def square_unevenly(x: int) -> int:
    time.sleep((x * 7 % 5) * 0.01)
    return x * x


def square_or_raise(x: int) -> int:
    if x == 7:
        raise ValueError(f'bad item {x}')
    return x * x


def worker_pid(x: int) -> int:
    return os.getpid()


@pytest.mark.parametrize('how, reason', [
    ('SIGKILL', 'worker crashed (killed by signal 9, SIGKILL)'),
    ('exit', 'worker crashed (exit code 3)'),
    ('segfault', 'worker crashed (killed by signal 11, SIGSEGV)'),
])
def test_crashing_item_fails_alone(tmp_path, how, reason):
    log = tmp_path / 'runs.txt'
    job = partial(square_or_die, bad=10, how=how, log=log)
    out = list(imap_isolated(job, range(40), 2, chunksize=4))
    assert out[10] == ItemFailure(reason)
    assert out[:10] + out[11:] == [i * i for i in range(40) if i != 10]
    # Item 10 ran twice (in its chunk, then alone); 11, held by the dead
    # worker with it, ran once, on retry; nothing else ran again.
    assert runs(log) == Counter({i: 2 if i == 10 else 1 for i in range(40)})
    assert children() == []


def test_time_limit_kills_the_slow_item_only(tmp_path):
    log = tmp_path / 'runs.txt'
    job = partial(square_or_sleep, slow=5, log=log)
    start = time.monotonic()
    out = list(imap_isolated(job, range(16), 2, chunksize=4, time_limit=1))
    assert time.monotonic() - start < 20
    assert out[5] == ItemFailure('timed out after 1 s')
    assert out[:5] + out[6:] == [i * i for i in range(16) if i != 5]
    # Not retried; 6 and 7, waiting behind it, ran once (on retry).
    assert runs(log) == Counter(range(16))
    assert children() == []


def test_results_in_input_order():
    out = list(imap_isolated(square_unevenly, range(60), 3, chunksize=2))
    assert out == [i * i for i in range(60)]
    assert list(imap_isolated(square_unevenly, [], 2)) == []


def test_one_worker_runs_in_process():
    assert set(imap_isolated(worker_pid, range(5), 1)) == {os.getpid()}
    assert os.getpid() not in set(imap_isolated(worker_pid, range(5), 2))


def test_job_exception_is_raised_and_workers_stop():
    with pytest.raises(ValueError, match='bad item 7') as info:
        list(imap_isolated(square_or_raise, range(20), 2, chunksize=3))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert 'square_or_raise' in str(info.value.__cause__)
    assert children() == [] and multiprocessing.active_children() == []


def test_closing_early_stops_the_workers():
    results = imap_isolated(square_unevenly, range(10_000), 2)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert len(children()) == 2
    results.close()
    assert children() == []


INTERRUPTED = f"""
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from pyg_unimol2.data.workers import imap_isolated

def job(x):
    time.sleep(0.05)
    return x

try:
    for i, _ in enumerate(imap_isolated(job, range(100_000), 2)):
        if i == 3:
            print('running', flush=True)
except KeyboardInterrupt:
    kids = [p for p in os.listdir('/proc') if p.isdigit() and
            open(f'/proc/{{p}}/stat').read().rsplit(')', 1)[1].split()[1]
            == str(os.getpid())]
    print('children', kids, flush=True)
"""


def test_keyboard_interrupt_stops_the_workers():
    # Ctrl-C as in a fresh shell, even if an earlier test in this process
    # left SIGINT ignored (an ignored signal stays ignored across exec).
    proc = subprocess.Popen([sys.executable, '-c', INTERRUPTED],
                            stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(
                                signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline() == 'running\n'
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert out == 'children []\n' and proc.returncode == 0


def run_killing_a_worker(fn: Callable, delay: float = 0.5):
    """Runs :obj:`fn` in a thread and SIGKILLs one of its worker processes
    :obj:`delay` seconds after they started; returns what :obj:`fn`
    returns."""
    out = {}

    def target():
        try:
            out['result'] = fn()
        except BaseException as e:  # Re-raised in the test.
            out['error'] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    while not children():
        assert thread.is_alive(), 'finished without workers'
        time.sleep(0.01)
    time.sleep(delay)
    assert thread.is_alive(), 'finished before a worker could be killed'
    os.kill(children()[0], signal.SIGKILL)
    thread.join(GUARD_S - 30)
    assert not thread.is_alive(), 'hangs after a worker was killed'
    if 'error' in out:
        raise out['error']
    return out['result']


def test_featurize_survives_a_killed_worker():
    smiles = read_moses(200)
    featurize = partial(featurize_smiles, smiles, workers=2, progress=False)
    expected = featurize()
    result = run_killing_a_worker(featurize)
    assert result.indices == expected.indices
    assert result.failures == expected.failures
    for got, want in zip(result.data, expected.data):
        assert got.keys() == want.keys()
        for key in want.keys():
            if isinstance(want[key], torch.Tensor):
                assert torch.equal(got[key], want[key]), key
            else:
                assert got[key] == want[key], key
    assert children() == []


def test_featurize_time_limit():
    slow = 'C' * 150  # About 10 s to embed and optimize.
    start = time.monotonic()
    result = featurize_smiles(['CCO', slow, 'c1ccccc1O'], workers=2,
                              time_limit=1, progress=False)
    assert time.monotonic() - start < 8
    assert result.indices == [0, 2]
    [failure] = result.failures
    assert failure.index == 1 and failure.smiles == slow
    assert 'timed out after 1 s' in failure.reason
    assert repr(slow) in failure.reason


def test_store_survives_a_killed_worker(tmp_path):
    build = partial(build_store, write_inputs(tmp_path), workers=2,
                    shard_size=SHARD_SIZE, progress=False, verbose=False)
    build(tmp_path / 'undisturbed')
    run_killing_a_worker(partial(build, tmp_path / 'disturbed'))
    assert_same_store(tmp_path / 'undisturbed', tmp_path / 'disturbed')
