r"""Atomic checkpoints written in a background thread, newest ``K`` kept.

:meth:`CheckpointWriter.save` snapshots the state to CPU memory in the
calling thread (so training may modify its tensors right away) and hands the
snapshot to a writer thread, which writes ``step_XXXXXXXX.pt.tmp``, flushes
it to disk, renames it to ``step_XXXXXXXX.pt`` (an atomic ``os.replace``)
and then deletes all but the newest :obj:`keep` checkpoints. A process
killed at any moment leaves only complete checkpoints under their final
names, plus possibly a ``.tmp`` file that :func:`latest_checkpoint` ignores
and the next writer removes.
"""
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any, List, Optional, Union

import torch

from .integrity import seal

__all__ = ['CheckpointWriter', 'list_checkpoints', 'latest_checkpoint',
           'cpu_snapshot']

_NAME = re.compile(r'^step_(\d{8,})\.pt$')


def cpu_snapshot(obj: Any) -> Any:
    """A deep copy of :obj:`obj` with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to('cpu', copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, cpu_snapshot(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_snapshot(v) for v in obj)
    return obj


def list_checkpoints(directory: Union[str, os.PathLike]) -> List[Path]:
    """Complete checkpoints of :obj:`directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Union[str, os.PathLike]) -> Optional[Path]:
    """The newest complete checkpoint of :obj:`directory`, if any."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


class CheckpointWriter:
    r"""Writes checkpoints of a run in a background thread.

    Args:
        directory (str or Path): checkpoint directory (created).
        keep (int, optional): newest checkpoints kept. (default: :obj:`10`)
    """
    def __init__(self, directory: Union[str, os.PathLike],
                 keep: int = 10) -> None:
        if keep < 1:
            raise ValueError(f'keep must be positive, got {keep}')
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob('step_*.pt.tmp'):
            stale.unlink()
        self.keep = keep
        self._queue: 'queue.Queue' = queue.Queue()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='checkpoint-writer')
        self._thread.start()

    def path(self, step: int) -> Path:
        """Final path of the checkpoint of :obj:`step`."""
        return self.directory / f'step_{step:08d}.pt'

    def save(self, step: int, state: Any) -> None:
        """Snapshots :obj:`state` now and writes it in the background.

        Raises:
            RuntimeError: an earlier write failed.
        """
        self._raise()
        self._queue.put((step, cpu_snapshot(state)))

    def wait(self) -> None:
        """Blocks until every queued checkpoint is on disk."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Waits for pending writes and stops the thread."""
        self.wait()
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError('writing a checkpoint failed') from self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self._write(*item)
            except BaseException as e:  # Reported by the next save/wait.
                self._error = e
            finally:
                self._queue.task_done()

    def _write(self, step: int, state: Any) -> None:
        final = self.path(step)
        tmp = final.with_name(final.name + '.tmp')
        try:
            with open(tmp, 'wb') as f:
                torch.save(seal(state) if isinstance(state, dict) else state,
                           f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for old in list_checkpoints(self.directory)[:-self.keep]:
            old.unlink()
