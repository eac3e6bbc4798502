r"""Sharded HDF5 store of featurized molecules for large-scale pretraining.

Two builders write the same format:

* :func:`build_store` reads SMILES files and embeds one conformer per
  molecule (ETKDGv3 + MMFF94, exactly as
  :func:`~pyg_unimol2.data.featurize.from_smiles` with the store's seed);
* :func:`build_geometry_store` reads structures with energies and forces
  (ANI-1x, Transition-1x, SPICE, rMD17, MD22, ASE databases and extended
  XYZ, see :mod:`pyg_unimol2.data.formats`) and stores
  :func:`~pyg_unimol2.data.geometry.geometry_to_data` of each, labels
  included.

Both featurize in crash-safe worker processes
(:func:`~pyg_unimol2.data.workers.imap_isolated`: a record that crashes its
worker twice or exceeds the time limit is a failure, the others are
unaffected) or, given a scheduler address, one shard per task on a Dask
cluster whose workers share the store directory (:mod:`.dask_build`), to
the same bytes. :class:`StoreReader` gives random access to the molecules as
:class:`~torch_geometric.data.Data` objects that follow the contract of
:mod:`pyg_unimol2.data.dense`;
:class:`pyg_unimol2.datasets.hdf5.HDF5MoleculeDataset` wraps it as a PyG
dataset.

Layout of a store directory::

    build.json          settings and inputs of the build (checked on resume)
    shard_000000.h5     molecules of input records [0, S), S = shard size
    shard_000001.h5     molecules of input records [S, 2 S)
    ...
    index.h5            per-molecule arrays of the whole store (samplers)
    failures.csv        every skipped record: file, line, smiles, reason
                        (SMILES) or file, name, reason (structures)
    manifest.json       counts, settings, labels, versions, shards; last

A shard holds the molecules of a fixed range of input records (the records
that fail are listed in the shard and skipped), so shard contents depend
neither on the number of workers nor on where a build was interrupted. All
arrays are plain, contiguous (unchunked, uncompressed) HDF5 datasets; ragged
per-molecule data is concatenated and addressed with offsets (no pickled
objects). For a shard with ``M`` molecules, ``A`` atoms, ``E`` directed bonds
(two per bond) and ``P = sum n^2`` atom pairs:

================== ============ ======= ======================================
dataset            shape        dtype   content
================== ============ ======= ======================================
``ptr``            ``[M+1, 7]`` int64   start of each molecule: atom rows of
                                        ``pos``, directed bonds, pairs of
                                        ``spd``, bytes of ``graph``,
                                        ``smiles``, ``name``, ``scaffold``
``graph``          ``[.]``      uint8   per molecule with ``n`` atoms and
                                        ``E`` directed bonds, ``19 n + 5 E``
                                        bytes: ``z`` ``[n]``, ``atom_feat``
                                        ``[n, 8]``, ``degree`` ``[n]``, ``x``
                                        ``[n, 9]``, ``edge_index`` ``[2, E]``
                                        and ``edge_attr`` ``[E, 3]``, each
                                        row-major
``pos``            ``[A, 3]``   float32 coordinates (Angstrom)
``spd``            ``[P]``      int16   shortest-path codes, row-major
``smiles``         ``[.]``      uint8   UTF-8 SMILES, concatenated: the
                                        input (SMILES stores), the perceived
                                        canonical one or ``''`` (structures)
``name``           ``[.]``      uint8   UTF-8 names (``''`` if none)
``has_graph``      ``[M]``      uint8   structures only: ``0`` graph
                                        features dropped, ``1`` perceived
``energy``         ``[M]``      float64 structures only: total energy (eV),
                                        NaN if the input has none
``forces``         ``[A, 3]``   float32 structures only: forces
                                        (eV/Angstrom), NaN if none
``charge``         ``[M]``      int16   structures only: total charge
``scaffold``       ``[.]``      uint8   UTF-8 Murcko scaffold SMILES
``record``         ``[M]``      int64   global input record index
``line``           ``[M]``      int64   SMILES only: line in its input file
``mol_hash``       ``[M]``      uint64  hash of the canonical SMILES, of the
                                        record's group for structures
                                        (its name up to the last ``/``)
``scaffold_hash``  ``[M]``      uint64  hash of the scaffold SMILES
``checksum``       ``[M]``      uint32  CRC-32 of each molecule's bytes
                                        (``graph``, ``pos``, ``spd``,
                                        ``smiles``, ``name`` slices, then
                                        ``has_graph``, ``energy``,
                                        ``forces``, ``charge`` if stored,
                                        chained)
``failure_record`` ``[F]``      int64   failed records: global index,
``failure_line``   ``[F]``      int64   line number (SMILES),
``failure_smiles`` ``[F]``      str     SMILES (SMILES),
``failure_name``   ``[F]``      str     record name (structures),
``failure_reason`` ``[F]``      str     error message
================== ============ ======= ======================================

All integer graph features fit a byte (atom indices too: at most 256 atoms
per molecule), so one read and one ``astype(int64)`` give every int64 tensor
of a molecule as a view. ``pair_feat`` (from the bonds, or the dropped code
when ``has_graph`` is ``0``) and ``pair_type`` (from ``atom_feat[:, 0]``)
are derived at read time rather than stored (``5 n^2`` bytes, more than half
of a molecule); ``has_graph`` is :obj:`True` in a store built from SMILES.
A store built from structures has the labels ``('energy', 'forces',
'charge')`` (``manifest['labels']``; ``[]`` for SMILES stores, and the
manifest counts the molecules ``with_energy`` and ``with_forces``).

``index.h5`` holds ``shard_ptr`` ``[S+1]`` (first molecule of each shard),
``layout`` ``[S, 11]`` (byte offset of ``ptr, graph, pos, spd, smiles,
name, checksum, has_graph, energy, forces, charge`` in each shard file,
``-1`` if empty or absent), ``ptr_checksum`` ``[S]`` (CRC-32 of each
shard's ``ptr``), and for all ``N`` molecules ``num_atoms`` (uint16),
``mol_hash`` (uint64) and ``scaffold_id`` (int64, dense ids in order of
first appearance), plus ``scaffold_count``. Scaffold ids are assigned from
64-bit hashes of the scaffold SMILES (memory linear in the number of
molecules, no string table); two scaffolds share an id with probability
about ``S^2 / 2^65`` (``1e-4`` for 73M scaffolds).

**Integrity.** Every read is verified: the CRC-32 of a molecule's bytes
against its ``checksum`` entry, the ``ptr`` table of a shard against
``ptr_checksum`` when the shard is mapped, and ``index.h5`` (whole file)
against the CRC-32 and size in ``manifest.json`` when a reader opens the
store. A mismatch, a truncated file or an unreadable one raises
:class:`CorruptStoreError` naming the file and the molecules affected.
Checking costs one CRC-32 pass over the bytes a read touches anyway
(``benchmarks/hdf5_io.py`` measures it).

Resuming: a shard is written to ``shard_K.h5.<random>.tmp``, flushed,
fsynced and renamed, so a shard file that exists is complete. A rerun with
the same settings skips existing shards, deletes leftover ``.tmp`` files
and rebuilds only the missing shards; the result is identical, array for
array (and byte for byte for the shard files), to an uninterrupted build.

Modules: :mod:`.format` (constants, errors, checksums), :mod:`.write`
(shards, index, manifest), :mod:`.dask_build` (shards on a Dask cluster),
:mod:`.build_smiles`, :mod:`.build_geometry` and :mod:`.read`.
"""
from .build_geometry import build_geometry_store
from .build_smiles import Record, build_store, read_records
from .format import FORMAT_VERSION, LABELS, CorruptStoreError, StoreError
from .read import StoreReader, decode
from .write import BuildSummary

__all__ = ['build_store', 'build_geometry_store', 'BuildSummary',
           'StoreReader', 'StoreError', 'CorruptStoreError', 'read_records',
           'Record', 'FORMAT_VERSION', 'LABELS', 'decode']
