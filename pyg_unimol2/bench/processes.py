"""Commands run as subprocesses a few at a time (the benchmark drivers that
launch one training process per configuration)."""
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

__all__ = ['run_parallel']


def run_parallel(jobs: Sequence[Tuple[str, List[str], Path]], parallel: int,
                 poll_s: float = 5.0) -> Dict[str, Tuple[int, float]]:
    r"""Runs the commands of :obj:`jobs` (``(name, command, log)``), at
    most :obj:`parallel` at a time in the given order, each one's output
    appended to its log file; a failing command does not stop the others.

    Returns:
        dict: ``{name: (exit code, wall seconds)}``.
    """
    todo, running, done = list(jobs), [], {}
    while todo or running:
        while todo and len(running) < parallel:
            name, command, log_path = todo.pop(0)
            log = open(log_path, 'a')
            print(f'{name}: started (log {log_path})', flush=True)
            running.append((name, subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT), time.time(),
                log, log_path))
        time.sleep(poll_s)
        for entry in list(running):
            name, proc, start, log, log_path = entry
            if proc.poll() is None:
                continue
            log.close()
            running.remove(entry)
            done[name] = (proc.returncode, time.time() - start)
            print(f'{name}: ' + (f'done in {done[name][1] / 60:.1f} min'
                                 if proc.returncode == 0 else
                                 f'FAILED (exit {proc.returncode}; see '
                                 f'{log_path})'), flush=True)
    return done
