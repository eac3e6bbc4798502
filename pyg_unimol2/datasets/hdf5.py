r"""PyG dataset over a sharded HDF5 molecule store
(:mod:`pyg_unimol2.data.store`, built with ``unimol2 build-hdf5``)."""
import os
import warnings
from typing import Callable, Optional, Union

import numpy as np
from torch_geometric.data import Data, Dataset

from ..data.store import CorruptStoreError, StoreReader

__all__ = ['HDF5MoleculeDataset', 'SPLITS', 'ON_CORRUPT']

SPLITS = ('train', 'valid')
ON_CORRUPT = ('raise', 'skip')
_MASK64 = (1 << 64) - 1


def _mix64(values: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 finalizer of ``values ^ mix(seed)`` (uint64, wrapping)."""
    x = values.astype(np.uint64) ^ np.uint64(
        (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class HDF5MoleculeDataset(Dataset):
    r"""Random-access PyG dataset over a molecule store.

    ``dataset[i]`` is a :class:`~torch_geometric.data.Data` with the
    attributes of :mod:`pyg_unimol2.data.dense` (so the stock
    :class:`~torch_geometric.loader.DataLoader`,
    :func:`~pyg_unimol2.data.dense.to_dense` and the model work unchanged),
    plus ``smiles`` and ``name``, and ``energy`` ``[1]`` (eV), ``forces``
    ``[n, 3]`` (eV/Angstrom) and ``charge`` ``[1]`` in a store built from
    structures (:func:`~pyg_unimol2.data.store.build_geometry_store`; its
    ``reader.labels``). Each access is a few contiguous slices of
    one memory-mapped shard (no per-molecule HDF5 call or system call, see
    :class:`~pyg_unimol2.data.store.StoreReader`); shards are mapped lazily
    in every process that reads, so the dataset can be used with
    :class:`~torch.utils.data.DataLoader` worker processes (``fork`` or
    ``spawn``) and :class:`~torch.utils.data.distributed.DistributedSampler`.
    Memory does not grow with the size of the store or with the number of
    reads: at most :obj:`max_open_files` shards are mapped per process.

    **Validation split, held out by molecule.** A molecule goes to the
    validation split when a seeded 64-bit hash of its canonical SMILES (of
    its group, for structures: see
    :func:`~pyg_unimol2.data.store.build_geometry_store`) falls below
    :obj:`valid_fraction` of the hash range, so every copy of the same
    molecule (in any input file, under any input spelling) lands in the
    same split, the split does not depend on the order or number of shards,
    and adding molecules to a store never moves existing ones between
    splits. The validation size is :obj:`valid_fraction` of the molecules up
    to sampling noise. Only the validation indices are kept in memory; the
    training split maps its indices around them.

    **Damaged data.** Every read is checksummed (see
    :mod:`pyg_unimol2.data.store`). With ``on_corrupt='raise'`` a damaged
    molecule raises :class:`~pyg_unimol2.data.store.CorruptStoreError`
    naming the file and the molecule; with ``'skip'`` it is reported once
    per process (a :class:`UserWarning` with the same text), counted in
    :attr:`corrupt_skipped` and returned as :obj:`None`, for a collate
    function that drops :obj:`None` (the pretraining one does).

    Args:
        root (str): the store directory.
        split (str, optional): ``'train'``, ``'valid'`` or :obj:`None` (all
            molecules). (default: :obj:`None`)
        valid_fraction (float, optional): expected fraction of molecules
            held out for validation. (default: :obj:`0.01`)
        split_seed (int, optional): seed of the split hash.
            (default: :obj:`0`)
        transform (callable, optional): applied to every molecule on access.
            (default: :obj:`None`)
        max_open_files (int, optional): shards kept mapped per process.
            (default: :obj:`64`)
        on_corrupt (str, optional): ``'raise'`` or ``'skip'`` a molecule
            whose bytes fail verification. (default: :obj:`'raise'`)
    """
    def __init__(self, root: Union[str, os.PathLike],
                 split: Optional[str] = None, valid_fraction: float = 0.01,
                 split_seed: int = 0, transform: Optional[Callable] = None,
                 max_open_files: int = 64, on_corrupt: str = 'raise') -> None:
        if split is not None and split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS} or None, got '
                             f'{split!r}')
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f'on_corrupt must be one of {ON_CORRUPT}, got '
                             f'{on_corrupt!r}')
        self.on_corrupt = on_corrupt
        #: Damaged molecules skipped by this process (``on_corrupt='skip'``).
        self.corrupt_skipped = 0
        if not 0.0 <= valid_fraction <= 1.0:
            raise ValueError(f'valid_fraction must be in [0, 1], got '
                             f'{valid_fraction}')
        super().__init__(None, transform)
        self.store_root = str(root)
        self.split = split
        self.valid_fraction = valid_fraction
        self.split_seed = split_seed
        self.reader = StoreReader(root, max_open_files=max_open_files)
        self._valid = self._valid_indices() if split is not None else None
        # Training index i maps to i + #{valid v : v - rank(v) <= i}.
        self._gaps = None if self._valid is None else \
            self._valid - np.arange(self._valid.shape[0])

    def _valid_indices(self) -> np.ndarray:
        threshold = np.uint64(min(int(self.valid_fraction * 2.0**64),
                                  _MASK64))
        if self.valid_fraction >= 1.0:
            return np.arange(len(self.reader), dtype=np.int64)
        parts = [start + np.flatnonzero(_mix64(h, self.split_seed) < threshold)
                 for start, h in self.reader.mol_hash_chunks()]
        return np.concatenate(parts).astype(np.int64) if parts else \
            np.zeros(0, np.int64)

    @property
    def manifest(self) -> dict:
        """The store's ``manifest.json``."""
        return self.reader.manifest

    def len(self) -> int:
        if self.split is None:
            return len(self.reader)
        if self.split == 'valid':
            return int(self._valid.shape[0])
        return len(self.reader) - int(self._valid.shape[0])

    def store_index(self, idx: int) -> int:
        """Position in the store of molecule :obj:`idx` of this split."""
        if self.split is None:
            return int(idx)
        if self.split == 'valid':
            return int(self._valid[idx])
        if not 0 <= idx < self.len():
            raise IndexError(f'index {idx} out of range for {self.len()}')
        return int(idx) + int(np.searchsorted(self._gaps, idx, 'right'))

    def store_indices(self) -> np.ndarray:
        """Store positions of all molecules of this dataset (after
        :meth:`index_select`), ``[len(self)]`` int64."""
        n = len(self.reader)
        if self.split is None:
            split = np.arange(n, dtype=np.int64)
        elif self.split == 'valid':
            split = self._valid
        else:
            keep = np.ones(n, bool)
            keep[self._valid] = False
            split = np.flatnonzero(keep).astype(np.int64)
        if self._indices is not None:
            split = split[np.asarray(self._indices, dtype=np.int64)]
        return split

    def get(self, idx: int) -> Optional[Data]:
        return self._read(self.store_index(idx))

    def _read(self, index: int) -> Optional[Data]:
        try:
            return self.reader.get(index)
        except CorruptStoreError as e:
            if self.on_corrupt == 'raise':
                raise
            self.corrupt_skipped += 1
            warnings.warn(f'skipped: {e}', stacklevel=2)
            return None

    def __getitem__(self, idx):
        # Fast path of the common case (a plain int, no subset, no
        # transform); everything else goes through PyG's Dataset.
        if type(idx) is int and self._indices is None and \
                self.transform is None:
            if idx < 0:
                idx += self.len()
            if self.split is not None:
                idx = self.store_index(idx)
            return self._read(idx)
        return super().__getitem__(idx)

    @property
    def num_atoms(self) -> np.ndarray:
        """Number of atoms of every molecule of this dataset, ``[len]``
        int64 (for :class:`~pyg_unimol2.data.samplers.DynamicBatchSampler`)."""
        return self.reader.num_atoms[self.store_indices()]

    @property
    def scaffold_id(self) -> np.ndarray:
        """Murcko scaffold id of every molecule of this dataset, ``[len]``
        int64 (for
        :class:`~pyg_unimol2.data.samplers.ScaffoldTemperatureSampler`)."""
        return self.reader.scaffold_id[self.store_indices()]

    def __repr__(self) -> str:
        split = '' if self.split is None else f', split={self.split!r}'
        return (f'{self.__class__.__name__}({len(self)}'
                f'{split})')
