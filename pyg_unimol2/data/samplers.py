r"""Distributed-aware samplers for pretraining on a molecule store.

* :class:`ScaffoldTemperatureSampler`: scaffold temperature sampling
  (Uni-Mol2 paper, eq. 1, :math:`\tau = 0.005`).
* :class:`DynamicBatchSampler`: batches of similar atom counts under an
  atom (token) and/or atom-pair budget, so that little of the ``[B, L, L]``
  pair tensors is padding.
* :class:`DatasetMixSampler`: which dataset each batch of a multi-dataset
  run comes from (proportional, uniform or temperature :math:`p_d \propto
  n_d^{1/T}`, JMP).

Both take ``num_replicas``/``rank`` (default: from :mod:`torch.distributed`
when it is initialized, else one replica), ``seed`` and :meth:`set_epoch`.
Each epoch's global order is drawn from a generator seeded with
``(seed, epoch)`` identically on every rank, and every rank takes a disjoint
share of it, so the result is deterministic given the seed, changes every
epoch, and is independent of the rank that computes it.
"""
import math
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ['scaffold_temperature_probabilities', 'ScaffoldTemperatureSampler',
           'DynamicBatchSampler', 'DatasetMixSampler', 'dataset_probabilities',
           'padding_fraction']

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[int]]


def _replicas(num_replicas: Optional[int],
              rank: Optional[int]) -> Tuple[int, int]:
    dist = torch.distributed
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f'invalid rank {rank} for {num_replicas} replicas')
    return num_replicas, rank


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def _as_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.cpu().numpy()
    return np.asarray(values)


def scaffold_temperature_probabilities(
        counts: ArrayLike, tau: float = 0.005) -> np.ndarray:
    r"""Sampling probability of every scaffold cluster (paper eq. 1).

    .. math::
        P_s = \frac{\exp(f_s / \tau)}{\sum_{s'} \exp(f_{s'} / \tau)},
        \qquad f_s = \frac{n_s}{N},

    a softmax with temperature :math:`\tau` over the frequencies
    :math:`f_s` of the Murcko scaffold clusters (:math:`n_s` molecules with
    scaffold :math:`s`, :math:`N` molecules in all). At :math:`\tau =
    0.005`, a scaffold holding 1% of the data is weighted
    :math:`e^{2} \approx 7.4` times a singleton scaffold: on a large corpus
    this is close to uniform over scaffolds, which strongly flattens the
    molecule distribution toward rare scaffolds. Because :math:`f_s` is a
    fraction of the corpus, the same :math:`\tau` flattens less on a small
    corpus.

    The official code has no implementation to compare with (the paper's
    sampling was done offline when the pretraining shards were written), so
    this follows the paper's description: a temperature softmax over the
    scaffold frequency distribution.

    Args:
        counts (array): :math:`n_s` for every scaffold, ``[S]``.
        tau (float, optional): temperature. (default: :obj:`0.005`)

    Returns:
        np.ndarray: :math:`P_s`, ``[S]`` float64, summing to one.
    """
    counts = _as_numpy(counts).astype(np.float64)
    if tau <= 0:
        raise ValueError(f'tau must be positive, got {tau}')
    if counts.size == 0:
        return counts
    logits = counts / counts.sum() / tau
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


class ScaffoldTemperatureSampler(Sampler[int]):
    r"""Draws molecules by scaffold temperature sampling (paper eq. 1).

    A draw picks a scaffold cluster :math:`s` with probability :math:`P_s`
    (:func:`scaffold_temperature_probabilities`), then one of its molecules
    uniformly, so molecule :math:`m` has probability
    :math:`P_{s(m)} / n_{s(m)}`.

    An epoch holds :obj:`num_samples` draws in all, split across replicas:
    every rank takes every ``num_replicas``-th draw starting at ``rank`` of
    the same global sequence, so the ranks' draws are disjoint. With
    :obj:`replacement`, draws are independent (a molecule may be drawn more
    than once, on the same or different ranks). Without, the epoch is a
    weighted random permutation (Efraimidis-Spirakis keys, computed with
    Gumbel noise), so no molecule appears twice in an epoch (unless
    :obj:`num_samples` exceeds the dataset or padding to a multiple of
    ``num_replicas`` wraps around).

    Args:
        scaffold_ids (array): scaffold id of every molecule of the dataset,
            ``[N]`` (e.g. ``HDF5MoleculeDataset.scaffold_id``).
        tau (float, optional): temperature. (default: :obj:`0.005`)
        num_samples (int, optional): draws per epoch over all replicas.
            (default: :obj:`None`, ``N``)
        replacement (bool, optional): draw with replacement.
            (default: :obj:`True`)
        num_replicas (int, optional): number of ranks.
        rank (int, optional): this rank.
        seed (int, optional): random seed, the same on all ranks.
            (default: :obj:`0`)
        drop_last (bool, optional): drop the tail of draws that does not
            divide evenly among replicas instead of drawing a few more.
            (default: :obj:`False`)
    """
    def __init__(self, scaffold_ids: ArrayLike, tau: float = 0.005,
                 num_samples: Optional[int] = None, replacement: bool = True,
                 num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, seed: int = 0,
                 drop_last: bool = False) -> None:
        ids = _as_numpy(scaffold_ids).reshape(-1)
        self.num_molecules = ids.shape[0]
        if self.num_molecules == 0:
            raise ValueError('no molecules to sample from')
        _, inverse, counts = np.unique(ids, return_inverse=True,
                                       return_counts=True)
        inverse = inverse.reshape(-1)
        self.tau = tau
        self.counts = counts.astype(np.int64)
        self.scaffold_prob = scaffold_temperature_probabilities(counts, tau)
        # Molecules grouped by scaffold: members[ptr[s]:ptr[s + 1]].
        self._members = np.argsort(inverse, kind='stable').astype(np.int64)
        self._ptr = np.concatenate([[0], np.cumsum(self.counts)])
        self._inverse = inverse
        self.replacement = replacement
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.seed = seed
        self.epoch = 0
        self.drop_last = drop_last
        total = self.num_molecules if num_samples is None else num_samples
        if total < 1:
            raise ValueError(f'num_samples must be positive, got {total}')
        self.num_samples_total = total
        if drop_last:
            self.num_samples = total // self.num_replicas
        else:
            self.num_samples = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    @property
    def molecule_prob(self) -> np.ndarray:
        """Probability of every molecule per draw, ``[N]``."""
        return (self.scaffold_prob / self.counts)[self._inverse]

    def set_epoch(self, epoch: int) -> None:
        """Reseeds the next :meth:`__iter__` with ``(seed, epoch)``."""
        self.epoch = epoch

    def global_order(self) -> np.ndarray:
        """The draws of the current epoch over all replicas,
        ``[total_size]`` int64."""
        rng = _rng(self.seed, self.epoch)
        size = self.total_size
        if self.replacement:
            s = rng.choice(self.counts.shape[0], size=size,
                           p=self.scaffold_prob)
            offset = np.minimum(
                (rng.random(size) * self.counts[s]).astype(np.int64),
                self.counts[s] - 1)
            return self._members[self._ptr[s] + offset]
        keys = np.log(self.molecule_prob) + rng.gumbel(size=self.num_molecules)
        order = np.argsort(-keys, kind='stable')
        if size > order.shape[0]:
            order = np.resize(order, size)  # Wraps around.
        return order[:size].astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        return iter(order[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_molecules}, '
                f'tau={self.tau}, scaffolds={self.counts.shape[0]}, '
                f'num_replicas={self.num_replicas}, rank={self.rank})')


class DynamicBatchSampler(Sampler[List[int]]):
    r"""Length-bucketed batches under an atom and/or atom-pair budget.

    A batch of ``B`` molecules with at most ``L`` atoms is padded to
    ``[B, L]`` atoms and ``[B, L, L]`` pairs by
    :func:`~pyg_unimol2.data.dense.to_dense`. Each epoch:

    1. the global order is drawn: a seeded permutation of the dataset
       (:obj:`shuffle`), ``range(N)``, or the indices of :obj:`sampler`
       (e.g. a :class:`ScaffoldTemperatureSampler` with one replica);
    2. it is cut into windows of :obj:`bucket_size` molecules, each window
       is sorted by atom count, and cut greedily into batches such that
       ``B * L <= max_tokens``, ``B * L**2 <= max_pairs`` and ``B <=
       max_batch_size`` (a molecule over budget makes a batch of its own);
    3. the batches are shuffled (if :obj:`shuffle` or a :obj:`sampler` is
       given) and dealt round-robin to the ranks; every rank gets the same
       number of batches, by dropping the last incomplete round
       (:obj:`drop_last`) or by repeating the first batches.

    Larger windows give batches of more uniform length (less padding) and
    less randomness in batch composition.

    Args:
        num_atoms (array): atom count of every molecule, ``[N]`` (e.g.
            ``HDF5MoleculeDataset.num_atoms``).
        max_pairs (int, optional): budget of padded pair elements
            ``B * L**2`` per batch. (default: :obj:`None`)
        max_tokens (int, optional): budget of padded atoms ``B * L`` per
            batch. (default: :obj:`None`)
        max_batch_size (int, optional): most molecules per batch.
            (default: :obj:`None`)
        sampler (Sampler, optional): source of the global order; it must
            return the same indices on every rank (one replica) and may
            repeat indices. (default: :obj:`None`)
        shuffle (bool, optional): without :obj:`sampler`, permute the data
            every epoch. (default: :obj:`True`)
        bucket_size (int, optional): molecules sorted together.
            (default: :obj:`4096`)
        num_replicas (int, optional): number of ranks.
        rank (int, optional): this rank.
        seed (int, optional): random seed, the same on all ranks.
            (default: :obj:`0`)
        drop_last (bool, optional): see step 3. (default: :obj:`False`)
    """
    def __init__(self, num_atoms: ArrayLike, max_pairs: Optional[int] = None,
                 max_tokens: Optional[int] = None,
                 max_batch_size: Optional[int] = None,
                 sampler: Optional[Sampler] = None, shuffle: bool = True,
                 bucket_size: int = 4096, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, seed: int = 0,
                 drop_last: bool = False) -> None:
        if max_pairs is None and max_tokens is None and max_batch_size is None:
            raise ValueError('give at least one of max_pairs, max_tokens and '
                             'max_batch_size')
        self.num_atoms = _as_numpy(num_atoms).reshape(-1).astype(np.int64)
        self.max_pairs = max_pairs
        self.max_tokens = max_tokens
        self.max_batch_size = max_batch_size
        if sampler is not None and getattr(sampler, 'num_replicas', 1) != 1:
            raise ValueError('the inner sampler must give the global order: '
                             'create it with num_replicas=1, rank=0')
        self.sampler = sampler
        self.shuffle = shuffle
        if bucket_size < 1:
            raise ValueError(f'bucket_size must be positive, got '
                             f'{bucket_size}')
        self.bucket_size = bucket_size
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.seed = seed
        self.epoch = 0
        self.drop_last = drop_last
        self._cache: Optional[Tuple[int, List[List[int]]]] = None

    def set_epoch(self, epoch: int) -> None:
        """Reseeds the next epoch with ``(seed, epoch)`` (also the inner
        :obj:`sampler`'s, if it has :meth:`set_epoch`)."""
        self.epoch = epoch
        if self.sampler is not None and hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def _order(self, rng: np.random.Generator) -> np.ndarray:
        if self.sampler is not None:
            return np.fromiter(iter(self.sampler), np.int64)
        n = self.num_atoms.shape[0]
        return rng.permutation(n) if self.shuffle else np.arange(n)

    def _cut(self, window: np.ndarray) -> List[np.ndarray]:
        """Greedy batches of one window sorted by atom count."""
        sizes = self.num_atoms[window]
        order = np.argsort(sizes, kind='stable')
        window, sizes = window[order], sizes[order]
        batches, start = [], 0
        count = window.shape[0]
        # With sizes non-decreasing, the batch [start, start + k) costs
        # k * sizes[start + k - 1] (squared for pairs); take the largest k
        # within budget, at least 1. k is capped by the smallest molecule.
        while start < count:
            smallest = max(int(sizes[start]), 1)
            cap = count - start
            if self.max_batch_size is not None:
                cap = min(cap, self.max_batch_size)
            if self.max_tokens is not None:
                cap = min(cap, max(self.max_tokens // smallest, 1))
            if self.max_pairs is not None:
                cap = min(cap, max(self.max_pairs // smallest**2, 1))
            length = np.arange(1, cap + 1)
            longest = sizes[start:start + cap]
            ok = np.ones(cap, bool)
            if self.max_tokens is not None:
                ok &= length * longest <= self.max_tokens
            if self.max_pairs is not None:
                ok &= length * longest * longest <= self.max_pairs
            # Costs grow with k, so ``ok`` is True on a prefix.
            take = cap if ok.all() else max(int(np.argmin(ok)), 1)
            batches.append(window[start:start + take])
            start += take
        return batches

    def global_batches(self) -> List[List[int]]:
        """All batches of the current epoch over all replicas, in the order
        they are dealt."""
        rng = _rng(self.seed, self.epoch)
        order = self._order(rng)
        batches: List[np.ndarray] = []
        for start in range(0, order.shape[0], self.bucket_size):
            batches.extend(self._cut(order[start:start + self.bucket_size]))
        if self.shuffle or self.sampler is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return [b.tolist() for b in batches]

    def _rank_batches(self) -> List[List[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self.global_batches()
        R = self.num_replicas
        if self.drop_last:
            total = (len(batches) // R) * R
            batches = batches[:total]
        else:
            total = math.ceil(len(batches) / R) * R
            if batches:
                batches = batches + [batches[i % len(batches)]
                                     for i in range(total - len(batches))]
        mine = batches[self.rank::R]
        self._cache = (self.epoch, mine)
        return mine

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._rank_batches())

    def __len__(self) -> int:
        return len(self._rank_batches())

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_atoms.shape[0]}, '
                f'max_pairs={self.max_pairs}, max_tokens={self.max_tokens}, '
                f'num_replicas={self.num_replicas}, rank={self.rank})')


def padding_fraction(batches: Sequence[Sequence[int]],
                     num_atoms: ArrayLike) -> Tuple[float, float]:
    r"""Fraction of padded pair and atom elements of :obj:`batches` when
    padded to their largest molecule (as
    :func:`~pyg_unimol2.data.dense.to_dense` does).

    Returns:
        (float, float): :math:`1 - \sum_b \sum_{i \in b} n_i^2 / \sum_b |b|
        L_b^2` and :math:`1 - \sum_b \sum_{i \in b} n_i / \sum_b |b| L_b`.
    """
    num_atoms = _as_numpy(num_atoms).astype(np.int64)
    real_pairs = padded_pairs = real_atoms = padded_atoms = 0
    for batch in batches:
        n = num_atoms[np.asarray(batch, dtype=np.int64)]
        if n.size == 0:
            continue
        L = int(n.max())
        real_pairs += int((n * n).sum())
        real_atoms += int(n.sum())
        padded_pairs += n.size * L * L
        padded_atoms += n.size * L
    if padded_pairs == 0:
        return 0.0, 0.0
    return 1 - real_pairs / padded_pairs, 1 - real_atoms / padded_atoms


MIX_MODES = ('proportional', 'uniform', 'temperature')


def dataset_probabilities(sizes: Sequence[int], mode: str = 'temperature',
                          temperature: float = 2.0) -> np.ndarray:
    r"""Probability of drawing each dataset,

    .. math::
        p_d = \frac{n_d^{1/T}}{\sum_{d'} n_{d'}^{1/T}},

    with :math:`T = 1` for ``'proportional'``, :math:`T \to \infty` for
    ``'uniform'`` and :obj:`temperature` for ``'temperature'`` (JMP uses
    :math:`T = 2`)."""
    if mode not in MIX_MODES:
        raise ValueError(f"unknown dataset sampling {mode!r} (use one of "
                         f"{', '.join(MIX_MODES)})")
    sizes = np.asarray(sizes, dtype=np.float64)
    if (sizes <= 0).any():
        raise ValueError(f'every dataset needs molecules, got sizes '
                         f'{sizes.tolist()}')
    if mode == 'temperature' and not temperature > 0:
        raise ValueError(f'temperature must be positive, got {temperature}')
    power = {'proportional': 1.0, 'uniform': 0.0,
             'temperature': 1.0 / temperature if mode == 'temperature'
             else 0.0}[mode]
    weights = sizes ** power
    return weights / weights.sum()


class DatasetMixSampler:
    r"""Interleaves the batches of several datasets; every batch holds
    molecules of one dataset.

    An epoch has as many batches as all datasets' batch samplers give
    together. With ``'proportional'`` it is exactly those batches, in a
    seeded random order (every molecule once). Otherwise each step draws a
    dataset with :func:`dataset_probabilities` (sizes: molecules per
    dataset) and takes that dataset's next batch; a dataset that runs out
    continues with further epochs of its own sampler. Everything is a
    function of ``(seed, epoch)``, so an epoch can be replayed from any
    position (exact resume).

    Args:
        samplers (Sequence[DynamicBatchSampler]): one batch sampler per
            dataset (with :meth:`set_epoch`).
        sizes (Sequence[int]): molecules per dataset.
        mode (str, optional): ``'proportional'``, ``'uniform'`` or
            ``'temperature'``. (default: ``'temperature'``)
        temperature (float, optional): :math:`T`. (default: :obj:`2.0`)
        seed (int, optional): seed. (default: :obj:`0`)
    """
    #: Own-sampler epochs per mix epoch reserved for running datasets on.
    _SUB_EPOCHS = 1_000_000

    def __init__(self, samplers: Sequence[Sampler], sizes: Sequence[int],
                 mode: str = 'temperature', temperature: float = 2.0,
                 seed: int = 0) -> None:
        if len(samplers) != len(sizes) or not samplers:
            raise ValueError('give one batch sampler and one size per '
                             'dataset')
        self.samplers = list(samplers)
        self.mode = mode
        self.temperature = temperature
        self.probabilities = dataset_probabilities(sizes, mode, temperature)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, d: int, sub_epoch: int) -> List[List[int]]:
        sampler = self.samplers[d]
        sampler.set_epoch(self.epoch * self._SUB_EPOCHS + sub_epoch)
        return list(sampler)

    def plan(self) -> List[Tuple[int, List[int]]]:
        """The epoch's ``(dataset, molecule indices)`` batches, in order."""
        rng = _rng(self.seed, self.epoch)
        own = [self._batches(d, 0) for d in range(len(self.samplers))]
        total = sum(len(b) for b in own)
        if self.mode == 'proportional':
            flat = [(d, b) for d, batches in enumerate(own) for b in batches]
            return [flat[i] for i in rng.permutation(len(flat))]
        which = rng.choice(len(own), size=total, p=self.probabilities)
        position = [0] * len(own)
        sub_epoch = [0] * len(own)
        plan = []
        for d in which.tolist():
            if position[d] == len(own[d]):
                sub_epoch[d] += 1
                own[d], position[d] = self._batches(d, sub_epoch[d]), 0
            plan.append((d, own[d][position[d]]))
            position[d] += 1
        return plan

    def __len__(self) -> int:
        return sum(len(self._batches(d, 0)) for d in range(len(self.samplers)))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({len(self.samplers)} datasets, '
                f'mode={self.mode}, p={np.round(self.probabilities, 3)})')
