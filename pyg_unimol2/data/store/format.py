r"""Constants, errors, checksums and per-molecule packing of the store format
(the layout is documented in :mod:`pyg_unimol2.data.store`)."""
import hashlib
import zlib
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ...errors import UserError
from ..errors import FeaturizationError

__all__ = ['FORMAT_VERSION', 'PTR_COLUMNS', 'LABEL_COLUMNS', 'LABELS',
           'LAYOUT_COLUMNS', 'ATOM_BYTES', 'EDGE_BYTES', 'MAX_STORE_ATOMS',
           'StoreError', 'CorruptStoreError', 'crc32', 'file_crc32',
           'molecule_crc32', 'hash64', 'pack_graph', 'shard_name']

FORMAT_VERSION = 3  # 2: checksums; 3: energies, forces, charges, has_graph
#: Columns of the ``ptr`` dataset.
PTR_COLUMNS = ('atom', 'edge', 'pair', 'graph', 'smiles', 'name',
               'scaffold')
#: Per-molecule datasets of a store built from structures, in file order.
LABEL_COLUMNS = ('has_graph', 'energy', 'forces', 'charge')
#: The labels such a store holds (``manifest['labels']``).
LABELS = ('energy', 'forces', 'charge')
#: Datasets addressed by the ``layout`` table of ``index.h5``, in order.
LAYOUT_COLUMNS = ('ptr', 'graph', 'pos', 'spd', 'smiles', 'name',
                  'checksum') + LABEL_COLUMNS
ATOM_BYTES = 19  # z, atom_feat[8], degree, x[9]
EDGE_BYTES = 5  # edge_index[:, e], edge_attr[e]
MAX_STORE_ATOMS = 256  # atom indices are uint8


class StoreError(UserError, RuntimeError):
    """The store directory is inconsistent with the requested build or is
    not a complete store."""


class CorruptStoreError(StoreError):
    r"""A store file whose bytes fail verification (checksum mismatch,
    truncated, unreadable).

    Attributes:
        path (Path): the damaged file.
        molecules (range): store indices of the molecules that cannot be
            read because of it.
    """
    def __init__(self, path: Path, molecules: range, reason: str) -> None:
        self.path, self.molecules = Path(path), molecules
        if len(molecules) == 1:
            which = f'store molecule {molecules.start}'
        else:
            which = (f'store molecules {molecules.start}..'
                     f'{molecules.stop - 1}')
        super().__init__(f'{path}: {reason}; {which} cannot be read '
                         f'(rebuild the store with unimol2 build-hdf5)')


def shard_name(k: int) -> str:
    """File name of shard :obj:`k`."""
    return f'shard_{k:06d}.h5'


def crc32(*buffers: Any) -> int:
    """Chained CRC-32 of :obj:`buffers` (bytes or contiguous arrays)."""
    crc = 0
    for buffer in buffers:
        crc = zlib.crc32(buffer, crc)
    return crc


def file_crc32(path: Path, block: int = 1 << 24) -> int:
    """CRC-32 of the bytes of the file :obj:`path`."""
    crc = 0
    with open(path, 'rb') as f:
        while chunk := f.read(block):
            crc = zlib.crc32(chunk, crc)
    return crc


def molecule_crc32(molecule: Dict[str, Any]) -> int:
    """The ``checksum`` entry of a packed molecule: CRC-32 of its ``graph``,
    ``pos``, ``spd``, ``smiles`` and ``name`` bytes, then of its
    :data:`LABEL_COLUMNS` if it has them, chained."""
    buffers = [molecule['graph'], molecule['pos'], molecule['spd'],
               molecule['smiles'].encode(), molecule['name'].encode()]
    if 'energy' in molecule:
        buffers += [molecule[key] for key in LABEL_COLUMNS]
    return crc32(*buffers)


def hash64(text: str) -> int:
    """64-bit BLAKE2b hash of :obj:`text` (little-endian)."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), 'little')


def pack_graph(features: Dict[str, np.ndarray], name: str) -> Dict[str, Any]:
    r"""The stored arrays of one featurized molecule: ``graph``
    ``[19 n + 5 E]`` uint8, ``num_edges``, ``pos`` ``[n, 3]`` float32 and
    ``spd`` ``[n * n]`` int16.

    Raises:
        FeaturizationError: naming :obj:`name`, when the molecule has more
            than :data:`MAX_STORE_ATOMS` atoms or a graph feature does not
            fit a byte.
    """
    z, x = features['z'], features['x']
    atom_feat, degree = features['atom_feat'], features['degree']
    n = z.shape[0]
    if n > MAX_STORE_ATOMS:
        raise FeaturizationError(name, f'{n} atoms > {MAX_STORE_ATOMS}, the '
                                 f'largest molecule a store can hold')
    edge_index, edge_attr = features['edge_index'], features['edge_attr']
    graph = np.concatenate([z, atom_feat.reshape(-1), degree, x.reshape(-1),
                            edge_index.reshape(-1), edge_attr.reshape(-1)])
    if graph.size and (graph.min() < 0 or graph.max() > 255):
        raise FeaturizationError(name, 'a graph feature does not fit the '
                                 'store (uint8)')
    return dict(
        graph=graph.astype(np.uint8),
        num_edges=edge_index.shape[1],
        pos=np.ascontiguousarray(features['pos'], np.float32),
        spd=np.ascontiguousarray(features['spd'], np.int16),
    )
