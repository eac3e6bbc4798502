r"""Training batches of one or several datasets for :func:`~.loop.fit`.

:class:`TaskBatches` cuts every dataset into batches with a
:class:`~pyg_unimol2.data.samplers.DynamicBatchSampler` (a fixed number of
molecules, or an atom / atom-pair budget as in pretraining) and interleaves
them with a :class:`~pyg_unimol2.data.samplers.DatasetMixSampler`; every
batch holds molecules of one dataset. Epochs are a function of ``(seed,
epoch)`` and can be replayed from any position (exact resume). Batches are
collated ahead of the step in persistent worker processes
(:class:`~pyg_unimol2.data.prefetch.EpochLoader`); what they hold does
not depend on the number of workers.
"""
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Batch, Data

from ..data.prefetch import EpochLoader
from ..data.samplers import DatasetMixSampler, DynamicBatchSampler
from .loop import seed_of

__all__ = ['TaskBatches', 'collate']

#: Molecules sorted together when batching under an atom / pair budget.
BUDGET_BUCKET = 2048


def collate(items: List[Data]) -> Batch:
    return Batch.from_data_list(items)


class _Concat(Dataset):
    """Several datasets behind one global index, read by ``(epoch, index)``
    keys: a dataset with ``set_epoch`` is told the epoch first (in whichever
    process reads it)."""
    def __init__(self, parts: Sequence[Dataset]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: Tuple[int, int]) -> Data:
        epoch, index = key
        d = int(np.searchsorted(self.offsets, index, side='right')) - 1
        part = self.parts[d]
        if hasattr(part, 'set_epoch'):
            part.set_epoch(epoch)
        return part[index - int(self.offsets[d])]


class TaskBatches:
    r"""Micro-batches ``(dataset name, Batch)`` of several datasets.

    Args:
        views (Dict[str, Dataset]): training molecules per dataset (a view
            with ``set_epoch``, such as
            :class:`~pyg_unimol2.train.conformers.RandomConformer`, is told
            the epoch).
        num_atoms (Dict[str, Sequence[int]]): atoms of every molecule.
        batch_size (int): most molecules per batch.
        max_tokens (int, optional): padded-atom budget ``B * L``.
        max_pairs (int, optional): padded-pair budget ``B * L**2``.
        mix (str): dataset sampling, ``'proportional'``, ``'uniform'`` or
            ``'temperature'``.
        temperature (float): :math:`T` of temperature sampling.
        seed (int): seed.
        device (torch.device): where batches go (pinned and copied
            asynchronously to a GPU).
        num_workers (int): worker processes that collate batches ahead of
            the step (``0``: the main process collates).
    """
    def __init__(self, views: Dict[str, Dataset],
                 num_atoms: Dict[str, Sequence[int]], batch_size: int,
                 max_tokens: Optional[int] = None,
                 max_pairs: Optional[int] = None, mix: str = 'temperature',
                 temperature: float = 2.0, seed: int = 0,
                 device: torch.device = torch.device('cpu'),
                 num_workers: int = 0) -> None:
        self.names = list(views)
        self.views = [views[n] for n in self.names]
        budget = max_tokens is not None or max_pairs is not None
        samplers = [
            DynamicBatchSampler(
                num_atoms[n], max_pairs=max_pairs, max_tokens=max_tokens,
                max_batch_size=batch_size,
                bucket_size=BUDGET_BUCKET if budget else batch_size,
                num_replicas=1, rank=0, seed=seed_of(seed, 5, d) % 2**31)
            for d, n in enumerate(self.names)]
        self.mixer = DatasetMixSampler(samplers, [len(v) for v in self.views],
                                       mix, temperature, seed)
        self.all = _Concat(self.views)
        self.loader = EpochLoader(self.all, collate, num_workers, device)
        self._length = len(self.mixer)

    def __len__(self) -> int:
        return self._length

    def iterate(self, epoch: int, start: int = 0
                ) -> Iterator[Tuple[str, Batch]]:
        self.mixer.set_epoch(epoch)
        plan = self.mixer.plan()[start:]
        offsets = self.all.offsets
        batches = self.loader([[(epoch, int(offsets[d]) + i) for i in batch]
                               for d, batch in plan])
        for (d, _), batch in zip(plan, batches):
            yield self.names[d], batch

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.names}, {self.mixer!r})'
