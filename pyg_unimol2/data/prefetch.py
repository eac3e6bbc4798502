r"""Training batches prepared ahead of the step, in DataLoader workers.

:class:`EpochLoader` is one :class:`~torch.utils.data.DataLoader` for a
whole run, handed one epoch's list of batches at a time: its worker
processes persist across epochs (they start when the loader is made, so
that they are up when the first step asks) and each keeps
:data:`PREFETCH` batches ready; they read, collate and pack the batches
(:class:`~pyg_unimol2.data.packed.Packed`), and on a CUDA device the
main process receives them pinned and copies each in one non-blocking
transfer. Which molecules a batch holds and their order depend only on the
batch lists, never on the number of workers: collation is deterministic
and nothing in a worker draws from the worker seeds. An error raised while
preparing a batch is raised again in the main process as itself (a user
error, such as a damaged store, stays one), its worker traceback as the
cause.

:func:`default_workers` is the number of workers when none is given.
"""
import os
import pickle
import traceback
import warnings
from typing import (Any, Callable, Dict, Iterator, List, NoReturn, Optional,
                    Sequence, Tuple, Type, Union)

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .packed import Packed

__all__ = ['EpochLoader', 'default_workers', 'resolve_workers', 'PREFETCH']

#: Batches each worker keeps ready (the DataLoader's ``prefetch_factor``).
PREFETCH = 4

#: Most workers per rank by default.
MAX_DEFAULT_WORKERS = 2


def default_workers() -> int:
    """``min(2, cores - 1)`` workers per rank: the cores this process may
    run on (its CPU affinity), shared by the ranks of the node
    (``LOCAL_WORLD_SIZE`` under ``torchrun``), less one for the training
    loop; 0 (the main process collates) when no core is left."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') \
        else os.cpu_count() or 1
    ranks = int(os.environ.get('LOCAL_WORLD_SIZE', 1))
    return max(0, min(MAX_DEFAULT_WORKERS, cores // ranks - 1))


def resolve_workers(num_workers: Optional[int]) -> int:
    """:obj:`num_workers`, or :func:`default_workers` if it is
    :obj:`None`."""
    return default_workers() if num_workers is None else num_workers


class _Failure:
    """An exception raised while preparing a batch, to raise again in the
    main process: itself if it survives pickling, else an instance of its
    class with its message (an ``__init__`` with other arguments)."""
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.trace = ''.join(traceback.format_exception(error))
        self.remote = False

    def __getstate__(self) -> Dict[str, Any]:
        try:
            pickle.loads(pickle.dumps(self.error))
            error = self.error
        except Exception:
            error = None
        return dict(error=error, cls=type(self.error),
                    message=str(self.error), trace=self.trace)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.error = state['error']
        if self.error is None:
            self.error = state['cls'].__new__(state['cls'])
            self.error.args = (state['message'],)
        self.trace, self.remote = state['trace'], True

    def reraise(self) -> NoReturn:
        if self.remote:
            raise self.error from RuntimeError(
                f'in a DataLoader worker process:\n{self.trace}')
        raise self.error


#: A warning of a worker: its message and category.
_Warning = Tuple[str, Type[Warning]]


class _Batches(Dataset):
    """Whole batches: item ``keys`` is the packed collated batch of the
    items :obj:`keys` of :obj:`dataset` (or the :class:`_Failure` of
    preparing it)."""
    def __init__(self, dataset: Dataset,
                 collate: Callable[[List[Any]], Any]) -> None:
        self.dataset, self.collate = dataset, collate

    def __getitem__(self, keys: Sequence[Any]
                    ) -> Tuple[Union[Packed, _Failure], List[_Warning]]:
        """The packed batch, and the warnings raised while preparing it in
        a worker process (e.g. damaged molecules skipped), for the main
        process to raise again; in the main process they pass as usual."""
        in_worker = get_worker_info() is not None
        with warnings.catch_warnings(record=in_worker) as caught:
            if in_worker:
                warnings.simplefilter('always')
            try:
                out = Packed.pack(self.collate([self.dataset[k]
                                                for k in keys]))
            except Exception as e:
                out = _Failure(e)
        return out, [(str(w.message), w.category) for w in caught or ()]


def _as_is(item: Any) -> Any:
    return item


class _Plan:
    """The DataLoader's sampler: the batches of the current epoch."""
    def __init__(self) -> None:
        self.batches: List[Sequence[Any]] = []

    def __iter__(self) -> Iterator[Sequence[Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class EpochLoader:
    r"""Batches of :obj:`dataset`, collated by :obj:`collate` in
    :obj:`num_workers` persistent worker processes (see the module
    docstring).

    Args:
        dataset (Dataset): the items; its keys are what the batch lists
            hold.
        collate (callable): items of a batch to the batch (any picklable
            object of tensors, e.g. a PyG ``Batch`` or a dataclass).
        num_workers (int): worker processes (``0``: the main process
            collates).
        device (torch.device): where batches are delivered; on CUDA they
            are pinned and copied asynchronously.
    """
    def __init__(self, dataset: Dataset, collate: Callable[[List[Any]], Any],
                 num_workers: int, device: torch.device) -> None:
        self.device = device
        self._plan = _Plan()
        self.loader = DataLoader(
            _Batches(dataset, collate), sampler=self._plan, batch_size=None,
            collate_fn=_as_is, num_workers=num_workers,
            pin_memory=device.type == 'cuda',
            persistent_workers=num_workers > 0,
            prefetch_factor=PREFETCH if num_workers > 0 else None,
            # Worker seeds from a private generator: making the loader
            # leaves the global RNG alone.
            generator=torch.Generator().manual_seed(0))
        if num_workers > 0:
            iter(self.loader)  # starts the workers (nothing to fetch yet)

    def __call__(self, batches: Sequence[Sequence[Any]]) -> Iterator[Any]:
        """The collated :obj:`batches` in order, on :attr:`device`. One
        epoch at a time: iterating a new call ends the previous one."""
        self._plan.batches = list(batches)
        for packed, caught in self.loader:
            for message, category in caught:
                warnings.warn(message, category)
            if isinstance(packed, _Failure):
                packed.reraise()
            yield packed.to(self.device)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_workers='
                f'{self.loader.num_workers}, device={self.device})')
