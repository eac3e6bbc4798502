r"""Reading a store: :class:`StoreReader` gives verified random access to its
molecules as :class:`~torch_geometric.data.Data` objects that follow the
contract of :mod:`pyg_unimol2.data.dense` (plus ``energy``, ``forces`` and
``charge`` when the store has them)."""
import json
import mmap
import os
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import h5py
import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.data.storage import GlobalStorage

from ..encoding import (DROPPED_ATOM_FEAT, DROPPED_PAIR_FEAT,
                        NO_BOND_PAIR_FEAT)
from .format import (ATOM_BYTES, EDGE_BYTES, FORMAT_VERSION, LAYOUT_COLUMNS,
                     PTR_COLUMNS, CorruptStoreError, StoreError, crc32,
                     file_crc32)

__all__ = ['StoreReader', 'decode']

_BOND_OFFSETS = np.array([4, 20, 36], np.uint8)  # OGB index -> pair code
#: atom_feat codes of CHI_UNSPECIFIED and of a dropped graph, whose pair
#: types are cached.
_CACHED_CHIRALITY = (3, DROPPED_ATOM_FEAT)
_LABELS = LAYOUT_COLUMNS.index('has_graph')  # first label column of layout

PathLike = Union[str, os.PathLike]


class _MappedShard:
    """Read-only memory map of one shard file and array views of its
    datasets (layout offsets from ``index.h5``).

    The ``ptr`` table is verified against its CRC-32 here; the other arrays
    are cut at the end of the file (a truncated shard), so that
    :meth:`StoreReader.read_raw` finds the molecules beyond the cut short
    and names them.
    """
    __slots__ = ('path', 'map', 'ptr', 'checksum', 'graph', 'pos', 'spd',
                 'smiles_offset', 'name_offset', 'labels')

    def __init__(self, path: Path, layout: List[int], num_molecules: int,
                 ptr_checksum: int, molecules: range) -> None:
        self.path = path
        try:
            with open(path, 'rb') as f:
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:  # ValueError: an empty file
            raise CorruptStoreError(path, molecules,
                                    f'unreadable shard ({e})') from None
        width = len(PTR_COLUMNS)
        ptr = self._view(np.int64, (num_molecules + 1) * width, layout[0])
        checksum = self._view(np.uint32, num_molecules, layout[6])
        if ptr.shape[0] < (num_molecules + 1) * width or \
                checksum.shape[0] < num_molecules:
            raise CorruptStoreError(path, molecules, 'truncated shard file '
                                    f'({len(self.map)} bytes)')
        if crc32(ptr) != ptr_checksum:
            raise CorruptStoreError(path, molecules, 'checksum mismatch in '
                                    'the molecule table (ptr)')
        self.ptr, self.checksum = ptr.reshape(-1, width), checksum
        atoms, _, pairs, graph = self.ptr[-1, :4].tolist()
        self.graph = self._view(np.uint8, graph, layout[1])
        self.pos = self._view(np.float32, 3 * atoms, layout[2])
        self.spd = self._view(np.int16, pairs, layout[3])
        self.smiles_offset, self.name_offset = layout[4], layout[5]
        #: Views of ``has_graph``, ``energy``, ``forces`` and ``charge``, or
        #: :obj:`None` (a store without labels, or an empty shard).
        self.labels = None
        if layout[_LABELS] >= 0:
            self.labels = (
                self._view(np.uint8, num_molecules, layout[_LABELS]),
                self._view(np.float64, num_molecules, layout[_LABELS + 1]),
                self._view(np.float32, 3 * atoms, layout[_LABELS + 2]),
                self._view(np.int16, num_molecules, layout[_LABELS + 3]))

    def _view(self, dtype, count: int, offset: int) -> np.ndarray:
        """Up to :obj:`count` items from byte :obj:`offset`, fewer if the
        file ends before."""
        size = np.dtype(dtype).itemsize
        count = max(min(count, (len(self.map) - offset) // size), 0)
        if count == 0:
            return np.zeros(0, dtype)
        return np.frombuffer(self.map, dtype, count, offset)

    def text(self, offset: int, length: int) -> bytes:
        return self.map[offset:offset + length] if length else b''


class StoreReader:
    r"""Random access to the molecules of a complete store.

    Shard files are memory-mapped (read-only) lazily, per process: a reader
    copied into a forked or spawned :class:`~torch.utils.data.DataLoader`
    worker maps its own. A molecule is a few contiguous slices of the maps,
    at byte offsets taken from ``index.h5``: no system call and no HDF5
    library call per molecule. At most :obj:`max_open_files` shards stay
    mapped (least recently used first out), so the memory of a reader is
    bounded whatever the size of the store: its anonymous memory does not
    grow with reads, and its resident file-backed pages (clean page cache,
    which the OS reclaims at will) are at most those of the mapped shards.

    Args:
        root (path): the store directory.
        max_open_files (int, optional): shards kept mapped per process.
            (default: :obj:`64`)
    """
    def __init__(self, root: PathLike, max_open_files: int = 64) -> None:
        self.root = Path(root)
        manifest_path = self.root / 'manifest.json'
        if not self.root.is_dir():
            raise StoreError(f'store {self.root}: no such directory (build '
                             f'one with unimol2 build-hdf5 SMILES_FILE '
                             f'{self.root})')
        if not manifest_path.exists():
            raise StoreError(f'{self.root} is not a complete store (no '
                             f'manifest.json); run build-hdf5 on it')
        try:
            self.manifest = json.loads(manifest_path.read_text())
            version = self.manifest['format_version']
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f'{manifest_path}: unreadable manifest ({e}); '
                             f'rebuild the store with unimol2 build-hdf5'
                             ) from None
        if version != FORMAT_VERSION:
            raise StoreError(f'{self.root}: store format version {version}, '
                             f'this version reads {FORMAT_VERSION}; rebuild '
                             f'it with unimol2 build-hdf5')
        self._check_index()
        with h5py.File(self.root / 'index.h5', 'r') as f:
            shard_ptr = f['shard_ptr'][:]
            layout = f['layout'][:]
            self._ptr_checksum: List[int] = f['ptr_checksum'][:].tolist()
        self._shard_ptr: List[int] = shard_ptr.tolist()
        self._layout: List[List[int]] = layout.tolist()
        self._files = [self.root / s['file'] for s in self.manifest['shards']]
        self._num_molecules = [s['num_molecules']
                               for s in self.manifest['shards']]
        self.max_open_files = max(int(max_open_files), 1)
        self._maps: 'OrderedDict[int, _MappedShard]' = OrderedDict()
        self._broken: Dict[int, CorruptStoreError] = {}
        self._pid = os.getpid()
        #: Labels of the molecules (``('energy', 'forces', 'charge')`` in a
        #: store built from structures, ``()`` in one built from SMILES).
        self.labels: Tuple[str, ...] = tuple(self.manifest['labels'])

    def _check_index(self) -> None:
        """Verifies ``index.h5`` against the size and CRC-32 of the
        manifest."""
        path = self.root / 'index.h5'
        expected = self.manifest['files']['index']
        everything = range(self.manifest['counts']['molecules'])
        try:
            size = path.stat().st_size
            if size != expected['bytes']:
                raise CorruptStoreError(path, everything, f'{size} bytes, '
                                        f'the manifest says '
                                        f'{expected["bytes"]} (truncated?)')
            if file_crc32(path) != expected['crc32']:
                raise CorruptStoreError(path, everything,
                                        'checksum mismatch')
        except OSError as e:
            raise CorruptStoreError(path, everything,
                                    f'unreadable ({e})') from None

    def __len__(self) -> int:
        return self._shard_ptr[-1]

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({str(self.root)!r}, {len(self)})'

    # Per-molecule arrays of index.h5 -------------------------------------
    def _index_array(self, key: str) -> np.ndarray:
        with h5py.File(self.root / 'index.h5', 'r') as f:
            return f[key][:]

    @property
    def num_atoms(self) -> np.ndarray:
        """Number of atoms of every molecule, ``[N]`` int64."""
        return self._index_array('num_atoms').astype(np.int64)

    @property
    def scaffold_id(self) -> np.ndarray:
        """Murcko scaffold id of every molecule (dense, in order of first
        appearance), ``[N]`` int64."""
        return self._index_array('scaffold_id')

    @property
    def scaffold_count(self) -> np.ndarray:
        """Number of molecules of every scaffold id, ``[num_scaffolds]``."""
        return self._index_array('scaffold_count')

    def mol_hash_chunks(self, chunk: int = 1 << 20
                        ) -> Iterator[Tuple[int, np.ndarray]]:
        """``(start, hashes)`` of the canonical-SMILES hashes, in chunks of
        :obj:`chunk` molecules (flat memory for any store size)."""
        with h5py.File(self.root / 'index.h5', 'r') as f:
            ds = f['mol_hash']
            for start in range(0, ds.shape[0], chunk):
                yield start, ds[start:start + chunk]

    # Mapped shards -------------------------------------------------------
    def __getstate__(self) -> Dict:
        state = self.__dict__.copy()
        state['_maps'] = OrderedDict()
        state['_broken'] = {}
        state['_pid'] = None
        return state

    def close(self) -> None:
        """Unmaps the shards mapped by this process (once no array returned
        by :meth:`read_raw` refers to them)."""
        self._maps = OrderedDict()

    def _shard(self, shard: int) -> '_MappedShard':
        if self._pid != os.getpid():  # A fresh process: map anew.
            self._maps = OrderedDict()
            self._pid = os.getpid()
        mapped = self._maps.get(shard)
        if mapped is None:
            if shard in self._broken:
                raise self._broken[shard]
            if len(self._maps) >= self.max_open_files:
                self._maps.popitem(last=False)
            molecules = range(self._shard_ptr[shard],
                              self._shard_ptr[shard + 1])
            try:
                mapped = _MappedShard(
                    self._files[shard], self._layout[shard],
                    self._num_molecules[shard], self._ptr_checksum[shard],
                    molecules)
            except CorruptStoreError as e:
                self._broken[shard] = e
                raise
            self._maps[shard] = mapped
        elif len(self._maps) > 1:
            self._maps.move_to_end(shard)
        return mapped

    # Molecules -----------------------------------------------------------
    def locate(self, index: int) -> Tuple[int, int]:
        """``(shard, position in shard)`` of molecule :obj:`index`."""
        if not 0 <= index < len(self):
            raise IndexError(f'molecule {index} out of range for a store of '
                             f'{len(self)}')
        shard = bisect_right(self._shard_ptr, index) - 1
        return shard, index - self._shard_ptr[shard]

    def read_raw(self, index: int) -> Dict[str, Any]:
        """The stored arrays of molecule :obj:`index`, verified against its
        checksum: ``graph`` ``[19 n + 5 E]`` uint8 (a read-only view of the
        map), ``pos`` ``[n, 3]`` float32, ``spd`` ``[n * n]`` int16
        (copies), ``smiles`` and ``name``; in a store with :attr:`labels`
        also ``has_graph`` (bool), ``energy`` (float, eV, NaN if unknown),
        ``forces`` ``[n, 3]`` float32 (eV/Angstrom, NaN if unknown, a copy)
        and ``charge`` (int).

        Raises:
            CorruptStoreError: the molecule's bytes (or its shard's table)
                are damaged or cut off.
        """
        shard, local = self.locate(index)
        m = self._shard(shard)
        a0, _, q0, g0, s0, n0, _, a1, _, q1, g1, s1, n1, _ = \
            m.ptr[local:local + 2].ravel().tolist()
        graph, pos = m.graph[g0:g1], m.pos[3 * a0:3 * a1]
        spd = m.spd[q0:q1]
        smiles = m.text(m.smiles_offset + s0, s1 - s0)
        name = m.text(m.name_offset + n0, n1 - n0)
        buffers = [graph, pos, spd, smiles, name]
        expected = [g1 - g0, 3 * (a1 - a0), q1 - q0, s1 - s0, n1 - n0]
        if m.labels is not None:
            has_graph, energy, forces, charge = m.labels
            buffers += [has_graph[local:local + 1], energy[local:local + 1],
                        forces[3 * a0:3 * a1], charge[local:local + 1]]
            expected += [1, 1, 3 * (a1 - a0), 1]
        if [len(b) for b in buffers] != expected:
            raise CorruptStoreError(m.path, range(index, index + 1),
                                    'truncated shard file')
        if crc32(*buffers) != int(m.checksum[local]):
            raise CorruptStoreError(m.path, range(index, index + 1),
                                    'checksum mismatch')
        raw = dict(graph=graph, pos=pos.reshape(-1, 3).copy(),
                   spd=spd.copy(), smiles=smiles.decode(),
                   name=name.decode())
        if m.labels is not None:
            raw.update(has_graph=bool(buffers[5][0]),
                       energy=float(buffers[6][0]),
                       forces=buffers[7].reshape(-1, 3).copy(),
                       charge=int(buffers[8][0]))
        return raw

    def get(self, index: int) -> Data:
        """Molecule :obj:`index` as a :class:`~torch_geometric.data.Data`
        with the attributes of :mod:`pyg_unimol2.data.dense`: identical to
        what :func:`~pyg_unimol2.data.featurize.from_smiles` returns for its
        SMILES with the store's seed, or, in a store built from structures,
        to what :func:`~pyg_unimol2.data.geometry.geometry_to_data` returns
        for its record (``energy``, ``forces`` and ``charge`` included)."""
        return decode(self.read_raw(index))

    def scaffold_smiles(self, index: int) -> str:
        """Murcko scaffold SMILES of molecule :obj:`index`."""
        shard, local = self.locate(index)
        with h5py.File(self._files[shard], 'r') as f:
            start, stop = f['ptr'][local:local + 2, 6]
            return f['scaffold'][start:stop].tobytes().decode()


#: Pair patterns of molecules with at most this many atoms are cached (at
#: most ~3.5 MB per process and kind of store for all sizes).
_CACHE_ATOMS = 128
_PAIR_FEAT_CACHE: Dict[Tuple[int, int], np.ndarray] = {}
_PAIR_TYPE_CACHE: Dict[Tuple[int, int], np.ndarray] = {}


def _constant_pair_feat(n: int, code: int) -> np.ndarray:
    """A fresh ``[n * n, 3]`` uint8 array of the pair code :obj:`code`
    (no bond, or dropped)."""
    pattern = _PAIR_FEAT_CACHE.get((n, code))
    if pattern is None:
        pattern = np.full((n * n, 3), code, np.uint8)
        if n <= _CACHE_ATOMS:
            _PAIR_FEAT_CACHE[(n, code)] = pattern
        else:
            return pattern
    return pattern.copy()


def _constant_pair_type(n: int, a: int) -> np.ndarray:
    """A fresh ``[n * n, 2]`` uint8 pair-type array of ``n`` atoms that all
    have the chirality code :obj:`a`: ``[a + 1, a + 129]``."""
    pattern = _PAIR_TYPE_CACHE.get((n, a))
    if pattern is None:
        pattern = np.empty((n * n, 2), np.uint8)
        pattern[:, 0] = a + 1
        pattern[:, 1] = a + 129
        if n <= _CACHE_ATOMS and a in _CACHED_CHIRALITY:
            _PAIR_TYPE_CACHE[(n, a)] = pattern
        else:
            return pattern
    return pattern.copy()


def _data_factory() -> Callable[[], Data]:
    """An empty :class:`~torch_geometric.data.Data` without running
    ``Data.__init__`` (a third of the cost of decoding a molecule): the
    instance state of ``Data()`` is copied and a fresh storage attached, as
    ``Data.__init__`` does. Falls back to ``Data`` if PyG's layout differs
    from the one this was written for."""
    reference = Data()
    state = dict(vars(reference))
    storage = state.pop('_store', None)
    if type(storage) is not GlobalStorage or set(state) != {
            '_tensor_attr_cls', '_edge_attr_cls'} or len(storage) != 0:
        return Data  # pragma: no cover - other PyG versions

    def new() -> Data:
        data = Data.__new__(Data)
        data.__dict__.update(state)
        data.__dict__['_store'] = GlobalStorage(_parent=data)
        return data

    probe = new()
    if set(vars(probe)) != set(vars(reference)) or \
            probe._store._parent() is not probe:
        return Data  # pragma: no cover
    return new


_new_data = _data_factory()


def decode(raw: Dict[str, Any]) -> Data:
    """Turns the stored arrays of one molecule (:meth:`StoreReader.read_raw`)
    into a :class:`~torch_geometric.data.Data`."""
    graph, pos = raw['graph'], raw['pos']
    n = pos.shape[0]
    e = (graph.shape[0] - ATOM_BYTES * n) // EDGE_BYTES
    ints = graph.astype(np.int64)
    c = ATOM_BYTES * n  # start of edge_index

    has_graph = raw.get('has_graph', True)
    if has_graph:  # pair_feat: [2, 2, 2] except on bonds.
        pair_feat = _constant_pair_feat(n, NO_BOND_PAIR_FEAT)
        if e:
            pair_feat.reshape(n, n, 3)[ints[c:c + e],
                                       ints[c + e:c + 2 * e]] = \
                graph[c + 2 * e:].reshape(e, 3) + _BOND_OFFSETS
    else:  # Graph features dropped (from_atoms): every pair too.
        pair_feat = _constant_pair_feat(n, DROPPED_PAIR_FEAT)
    # pair_type from the chirality code a = atom_feat[:, 0]: almost always
    # a single value per molecule, which is a copy of a cached pattern. A
    # dropped graph has a = 1 everywhere, i.e. the dropped code [2, 130].
    chirality = graph[n:9 * n:8].tobytes()
    if chirality.count(chirality[0]) == n:
        pair_type = _constant_pair_type(n, chirality[0])
    else:
        a = graph[n:9 * n:8]
        pair_type = np.empty((n * n, 2), np.uint8)
        view = pair_type.reshape(n, n, 2)
        view[..., 0] = (a + 1)[:, None]
        view[..., 1] = (a + 129)[None, :]

    # Views of one int64 buffer; numpy slicing is cheaper than torch's.
    tensor = torch.from_numpy
    data = _new_data()
    # Bypasses Data.__setattr__ (about 10 us per attribute); same result.
    data._store._mapping.update(
        z=tensor(ints[:n]),
        atom_feat=tensor(ints[n:9 * n].reshape(n, 8)),
        degree=tensor(ints[9 * n:10 * n]),
        x=tensor(ints[10 * n:c].reshape(n, 9)),
        edge_index=tensor(ints[c:c + 2 * e].reshape(2, e)),
        edge_attr=tensor(ints[c + 2 * e:].reshape(e, 3)),
        pos=tensor(pos),
        spd=tensor(raw['spd']),
        pair_feat=tensor(pair_feat),
        pair_type=tensor(pair_type),
        has_graph=tensor(np.full(1, has_graph, np.bool_)),
        smiles=raw['smiles'],
        name=raw['name'],
    )
    if 'energy' in raw:
        data._store._mapping.update(
            energy=tensor(np.full(1, raw['energy'], np.float64)),
            forces=tensor(raw['forces']),
            charge=tensor(np.full(1, raw['charge'], np.int64)),
        )
    return data
