r"""Building a store from structures with energies and forces:
:func:`build_geometry_store` reads ANI-1x, Transition-1x, SPICE, rMD17, MD22
or ASE files (:mod:`pyg_unimol2.data.formats`) and featurizes every record
with :func:`~pyg_unimol2.data.geometry.geometry_to_data` in crash-safe worker
processes. A record that fails
:func:`~pyg_unimol2.data.geometry.check_geometry` (mismatched lengths, a NaN
or infinite label, an unknown element, a unit cell) or featurization is
listed in ``failures.csv`` (input file, record name, reason) and skipped:
no such label is ever stored."""
import math
import os
import time
from functools import partial
from pathlib import Path
from typing import (Any, Dict, Iterator, List, NamedTuple, Optional,
                    Sequence, Union)

import numpy as np
from rdkit import rdBase
from torch_geometric.data import Data
from tqdm import tqdm

from ...errors import ConfigError
from ..errors import FeaturizationError
from ..featurize import TIME_LIMIT
from ..formats import detect_format, read_geometries, reader_options
from ..geometry import MAX_GEOMETRY_ATOMS, GeometryRecord, geometry_to_data
from ..splits import murcko_scaffold
from .dask_build import dask_client
from .format import (FORMAT_VERSION, LABELS, hash64,
                     pack_graph, shard_name)
from .write import (BuildSummary, build_inputs, Result, compute_shards,
                    finish_build, open_build, pending_shards, write_shard)

__all__ = ['build_geometry_store', 'group_key']

#: Shard datasets of a failed record (``failures.csv`` columns).
FAILURE_COLUMNS = ('failure_name', 'failure_reason')
_GRAPH_KEYS = ('z', 'x', 'atom_feat', 'degree', 'edge_index', 'edge_attr',
               'pos', 'spd')

PathLike = Union[str, os.PathLike]


class Item(NamedTuple):
    """One input structure."""
    index: int  #: global record index over all input files
    record: GeometryRecord


def _items(inputs: Sequence[Path], formats: Sequence[str], options: Dict,
           file_records: List[int]) -> Iterator[Item]:
    """The records of :obj:`inputs`, in order, each file read with the
    :obj:`options` its reader takes; ``file_records[i]`` counts those of
    file ``i`` as they are read."""
    index = 0
    for file, (path, fmt) in enumerate(zip(inputs, formats)):
        taken = {k: v for k, v in options.items() if k in reader_options(fmt)}
        for record in read_geometries(path, fmt, **taken):
            yield Item(index, record)
            file_records[file] += 1
            index += 1


def group_key(name: str) -> str:
    """The split key of a record: its name up to the last ``/`` (the
    group of :mod:`pyg_unimol2.data.formats` names), or the whole name when
    it has no group."""
    return name.rsplit('/', 1)[0]


def _pack(data: Data) -> Dict[str, Any]:
    """The stored arrays of one featurized structure."""
    features = {key: data[key].numpy() for key in _GRAPH_KEYS}
    packed = pack_graph(features, data.name)
    has_graph = bool(data.has_graph.item())
    charge = int(data.charge.item())
    if not -2**15 <= charge < 2**15:
        raise FeaturizationError(data.name, f'total charge {charge} does not '
                                 f'fit the store (int16)')
    scaffold = murcko_scaffold(data.smiles) if has_graph else ''
    packed.update(
        smiles=data.smiles, name=data.name, scaffold=scaffold,
        mol_hash=hash64(group_key(data.name)), scaffold_hash=hash64(scaffold),
        has_graph=np.full(1, has_graph, np.uint8),
        energy=data.energy.numpy().astype(np.float64),
        forces=np.ascontiguousarray(data.forces.numpy(), np.float32),
        charge=np.full(1, charge, np.int16))
    return packed


def _featurize(item: Item, perceive_bonds: bool,
               max_atoms: int) -> Union[Dict, str]:
    """Worker job: the packed structure of :obj:`item`, or why it
    failed."""
    try:
        with rdBase.BlockLogs():
            return _pack(geometry_to_data(item.record,
                                          perceive_bonds=perceive_bonds,
                                          max_atoms=max_atoms))
    except FeaturizationError as e:
        return str(e)
    except Exception as e:  # Unexpected RDKit errors skip the record too.
        return f'{type(e).__name__}: {e} ({item.record.name!r})'


def _write_shard(out: Path, k: int, results: List[Result]) -> None:
    """Writes the shard of :obj:`results` (items with their output)."""
    mols = [(r, o) for r, o in results if not isinstance(o, str)]
    fails = [(r, o) for r, o in results if isinstance(o, str)]
    write_shard(
        out / shard_name(k), k, results[0][0].index, len(results),
        [m for _, m in mols],
        dict(record=np.array([r.index for r, _ in mols], np.int64)),
        dict(failure_record=np.array([r.index for r, _ in fails], np.int64),
             failure_name=[r.record.name for r, _ in fails],
             failure_reason=[reason for _, reason in fails]),
        labels=True)


def build_geometry_store(inputs: Union[PathLike, Sequence[PathLike]],
                         out_dir: PathLike, *, format: Optional[str] = None,
                         options: Optional[Dict[str, str]] = None,
                         shard_size: int = 10_000,
                         perceive_bonds: bool = False,
                         max_atoms: int = MAX_GEOMETRY_ATOMS,
                         workers: Optional[int] = None, chunksize: int = 64,
                         time_limit: Optional[float] = TIME_LIMIT,
                         scheduler: Optional[str] = None,
                         progress: bool = True,
                         verbose: bool = True) -> BuildSummary:
    r"""Builds (or resumes building) a sharded HDF5 store from structures
    with energies and forces.

    The store has the layout of :mod:`pyg_unimol2.data.store` plus the
    labels ``energy`` (eV), ``forces`` (eV/Angstrom) and ``charge``, and
    :meth:`~pyg_unimol2.data.store.StoreReader.get` returns exactly
    :func:`~pyg_unimol2.data.geometry.geometry_to_data` of each record: all
    atoms (hydrogens included), graph features dropped or, with
    :obj:`perceive_bonds`, perceived. Records are read in file order, so
    shards (fixed record ranges) do not depend on :obj:`workers`, and a
    rerun resumes an interrupted build to identical files, as
    :func:`~pyg_unimol2.data.store.build_store` does.

    The validation split of
    :class:`~pyg_unimol2.datasets.hdf5.HDF5MoleculeDataset` holds out
    groups (:func:`group_key`): a formula of ANI-1x, a molecule of SPICE, a
    reaction of Transition-1x stay in one split; the frames of files
    without groups (rMD17, MD22, ASE) are split one by one. Only structures
    with perceived bonds have a Murcko scaffold.

    Args:
        inputs (path or list of paths): the files, in order.
        out_dir (path): the store directory (created if needed).
        format (str, optional): the format of every input, a name of
            :data:`~pyg_unimol2.data.formats.READERS`.
            (default: :obj:`None`, each from its file name, see
            :func:`~pyg_unimol2.data.formats.detect_format`)
        options (dict, optional): keyword arguments of the readers, each
            given to the inputs whose reader takes it, e.g.
            ``{'level': 'wb97x_tz'}`` (ANI-1x) or ``{'split': 'train'}``
            (Transition-1x). (default: :obj:`None`)
        shard_size (int, optional): input records per shard.
            (default: :obj:`10000`)
        perceive_bonds (bool, optional): perceive bonds from the
            coordinates and the total charge instead of dropping the graph
            features. (default: :obj:`False`)
        max_atoms (int, optional): largest structure kept, hydrogens
            included, at most ``256``.
            (default: :data:`~pyg_unimol2.data.geometry.MAX_GEOMETRY_ATOMS`)
        workers (int, optional): featurization processes; ``1`` runs in
            the calling process. (default: :obj:`None`: ``os.cpu_count()``
            with :obj:`perceive_bonds`, else ``1``: dropping the graph
            costs less than sending a record to a worker)
        chunksize (int, optional): records sent to a worker at once.
            (default: :obj:`64`)
        time_limit (float, optional): seconds one record may take.
            (default: :data:`~pyg_unimol2.data.featurize.TIME_LIMIT`)
        scheduler (str, optional): address of a Dask scheduler: featurize
            one shard per task on its cluster, to the same store (see
            :func:`~pyg_unimol2.data.store.build_store`).
            (default: :obj:`None`)
        progress (bool, optional): show a progress bar.
            (default: :obj:`True`)
        verbose (bool, optional): print a summary. (default: :obj:`True`)

    Returns:
        BuildSummary: counts and the throughput of this call.

    Raises:
        InputError: an input is not in its format (a missing key, a file
            of another kind), naming the file and the key.
        StoreError: :obj:`out_dir` holds a build with other inputs or
            settings.
    """
    start = time.perf_counter()
    inputs = build_inputs(inputs, 'structure file', max_atoms, shard_size)
    formats = [format or detect_format(p) for p in inputs]
    options = dict(options or {})
    taken = {key for f in set(formats) for key in reader_options(f)}
    for key in options:
        if key not in taken:
            raise ConfigError(f'option {key!r} is taken by no input format '
                              f'({", ".join(sorted(set(formats)))})')
    out = Path(out_dir)
    settings = dict(format_version=FORMAT_VERSION, formats=formats,
                    options=options, shard_size=shard_size,
                    perceive_bonds=perceive_bonds, max_atoms=max_atoms,
                    graph='perceived' if perceive_bonds else 'dropped')
    complete = open_build(out, settings, inputs, start, verbose)
    if complete is not None:
        return complete

    file_records = [0] * len(inputs)
    job = partial(_featurize, perceive_bonds=perceive_bonds,
                  max_atoms=max_atoms)
    if workers is None:
        workers = (os.cpu_count() or 1) if perceive_bonds else 1
    shards = pending_shards(
        _items(inputs, formats, options, file_records), shard_size,
        lambda k: not (out / shard_name(k)).exists())
    t0 = time.perf_counter()
    with dask_client(scheduler) as client, tqdm(
            unit='mol', desc='Building store', disable=not progress,
            smoothing=0.05) as bar:
        built_shards, built_records = compute_shards(
            out, shards, job, _write_shard,
            lambda item: repr(item.record.name), bar, workers=workers,
            chunksize=chunksize, time_limit=time_limit,
            lookahead=shard_size, client=client)
    featurize_seconds = time.perf_counter() - t0
    num_shards = math.ceil(sum(file_records) / shard_size)
    return finish_build(out, inputs, file_records, settings, num_shards,
                        LABELS, FAILURE_COLUMNS, built_shards, built_records,
                        start, featurize_seconds, workers, scheduler,
                        'structures', lambda row: row[2], verbose)
