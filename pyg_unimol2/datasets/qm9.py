r"""QM9 with DFT geometries and Uni-Mol2 features.

Two sources give the same 130,831 molecules:

* ``qm9pack`` (PyPI, MIT licence, a dependency of this package): CSV files
  inside the installed package (``qm9pack/data/qm9_part{1,2,3}.csv``) holding
  the GDB index, the GDB-17 SMILES and InChI, elements, B3LYP/6-31G(2df,p)
  coordinates (Angstrom), Mulliken charges, frequencies and the 15 scalar
  properties in the units of the official files. The 3,054 molecules that the
  QM9 authors flagged as failing their geometry consistency check
  (``uncharacterized.txt``) are not in it. It carries only the GDB SMILES,
  not the SMILES of the relaxed geometry.
* the official archive ``dsgdb9nsd.xyz.tar.bz2`` (133,885 ``.xyz`` files,
  figshare, CC0), if the user downloaded it. Its extended xyz format is parsed
  here; by default its 3,054 uncharacterized molecules are dropped (the set of
  characterized indices is the one of ``qm9pack``), so both sources give the
  same molecules.

Only ``qm9pack`` is imported lazily by file location, never as a module (its
``__init__`` needs ``pkg_resources``, which recent setuptools no longer ship).
"""
import csv
import functools
import importlib.util
import os
import os.path as osp
import tarfile
import time
from contextlib import closing
from typing import (Callable, Dict, Iterable, Iterator, List, NamedTuple,
                    Optional, Sequence, Tuple)

import numpy as np
import torch
from torch_geometric.data import Data, InMemoryDataset

from ..errors import MissingFileError

__all__ = ['QM9', 'QM9_TARGETS', 'Target', 'read_qm9pack', 'read_qm9_archive',
           'parse_qm9_xyz', 'QM9Record']


class Target(NamedTuple):
    """One regression target: its column in ``y``, unit and description."""
    index: int
    unit: str
    description: str


#: The 12 standard QM9 targets, in the order of the columns of ``y`` and in
#: the units of the official raw files (= the Uni-Mol2 paper's units):
#: energies in Hartree, ``alpha`` in bohr^3, ``r2`` in bohr^2, ``mu`` in Debye,
#: ``cv`` in cal/(mol K).
QM9_TARGETS: Dict[str, Target] = {
    'mu': Target(0, 'D', 'dipole moment'),
    'alpha': Target(1, 'bohr^3', 'isotropic polarizability'),
    'homo': Target(2, 'Ha', 'HOMO energy'),
    'lumo': Target(3, 'Ha', 'LUMO energy'),
    'gap': Target(4, 'Ha', 'HOMO-LUMO gap (lumo - homo)'),
    'r2': Target(5, 'bohr^2', 'electronic spatial extent <R^2>'),
    'zpve': Target(6, 'Ha', 'zero-point vibrational energy'),
    'u0': Target(7, 'Ha', 'internal energy at 0 K'),
    'u298': Target(8, 'Ha', 'internal energy at 298.15 K'),
    'h298': Target(9, 'Ha', 'enthalpy at 298.15 K'),
    'g298': Target(10, 'Ha', 'free energy at 298.15 K'),
    'cv': Target(11, 'cal/(mol K)', 'heat capacity at 298.15 K'),
}

# qm9pack CSV columns of the 12 targets, in QM9_TARGETS order.
_QM9PACK_COLUMNS = [
    'Dipole_debye', 'Polarizability_bohr3', 'HOMO_au', 'LUMO_au',
    'HOMO_LUMO_gap_au', 'R2_bohr2', 'ZPVE_au', 'InternalEnergy_0K_au',
    'InternalEnergy_298K_au', 'Enthalphy_298K_au', 'GibbsFreeEnergy_298K_au',
    'Heatcapacity_Cv_cal_mol_K'
]
# Position of the 12 targets among the 15 properties of the official
# property line ``gdb i A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv``.
_ARCHIVE_COLUMNS = list(range(3, 15))

ARCHIVE_NAME = 'dsgdb9nsd.xyz.tar.bz2'
ARCHIVE_URL = 'https://ndownloader.figshare.com/files/3195389'
FIGSHARE_URL = ('https://figshare.com/collections/Quantum_chemistry_'
                'structures_and_properties_of_134_kilo_molecules/978904')
NUM_CHARACTERIZED = 130831
_SYMBOL = {'H': 1, 'C': 6, 'N': 7, 'O': 8, 'F': 9}
_FORMAT_VERSION = 1  # bump to invalidate processed files


class QM9Record(NamedTuple):
    """One molecule as read from a raw source (hydrogens included)."""
    idx: int  # GDB index (1..133885)
    z: np.ndarray  # [n] int64
    pos: np.ndarray  # [n, 3] float64, Angstrom
    smiles: str  # GDB-17 SMILES
    smiles_relaxed: Optional[str]  # SMILES of the relaxed geometry (archive)
    y: np.ndarray  # [12] float64, QM9_TARGETS order and units


# --------------------------------------------------------------------------
# Raw readers
# --------------------------------------------------------------------------
def qm9pack_data_dir() -> str:
    """Folder of the CSV files shipped by the installed ``qm9pack``."""
    spec = importlib.util.find_spec('qm9pack')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('QM9 needs the PyPI package qm9pack '
                          '(pip install qm9pack) or the official archive '
                          f'{ARCHIVE_NAME}')
    return osp.join(list(spec.submodule_search_locations)[0], 'data')


def _qm9pack_frames(columns: Sequence[str], limit: Optional[int] = None):
    import pandas as pd
    folder = qm9pack_data_dir()
    frames = []
    for k in (1, 2, 3):
        left = None if limit is None else limit - sum(map(len, frames))
        if left is not None and left <= 0:
            break
        frames.append(pd.read_csv(osp.join(folder, f'qm9_part{k}.csv'),
                                  usecols=columns, nrows=left))
    return pd.concat(frames, ignore_index=True)


@functools.lru_cache(maxsize=1)
def qm9pack_indices() -> frozenset:
    """GDB indices of the 130,831 characterized molecules (from qm9pack)."""
    return frozenset(_qm9pack_frames(['Index'])['Index'].tolist())


def read_qm9pack(limit: Optional[int] = None) -> List[QM9Record]:
    """Reads the molecules of the installed ``qm9pack`` in GDB order (only
    the first :obj:`limit` ones if given)."""
    df = _qm9pack_frames(['Index', 'SMILES', 'Elements', 'XYZ_Ang'] +
                         _QM9PACK_COLUMNS, limit)
    y = df[_QM9PACK_COLUMNS].to_numpy(np.float64)
    out = []
    for k, (idx, smi, el, xyz) in enumerate(
            zip(df['Index'].tolist(), df['SMILES'].tolist(),
                df['Elements'].tolist(), df['XYZ_Ang'].tolist())):
        z = np.array([_SYMBOL[e.strip(" '\"")] for e in el.strip('[]')
                      .split(',')], dtype=np.int64)
        pos = np.array(xyz.replace('[', '').replace(']', '').split(','),
                       dtype=np.float64).reshape(-1, 3)
        out.append(QM9Record(int(idx), z, pos, smi, None, y[k]))
    return out


def _float(token: str) -> float:
    # Mathematica-style exponents appear in the official files: 1.2*^-6.
    return float(token.replace('*^', 'e'))


def parse_qm9_xyz(text: str) -> QM9Record:
    r"""Parses one official QM9 ``.xyz`` file (extended format of
    Ramakrishnan et al., Sci. Data 1, 140022, 2014)::

        n
        gdb i  A B C  mu alpha homo lumo gap r2 zpve U0 U H G Cv
        El x y z q            (n lines; q = Mulliken charge)
        frequencies
        SMILES_GDB  SMILES_relaxed
        InChI_GDB   InChI_relaxed

    Numbers may use Fortran/Mathematica exponents (``1.2*^-6``).
    """
    lines = text.strip('\n').split('\n')
    n = int(lines[0])
    props = lines[1].split()
    if props[0] != 'gdb' or len(props) != 17:
        raise ValueError(f'not a QM9 property line: {lines[1]!r}')
    idx = int(props[1])
    values = [_float(t) for t in props[2:]]
    z = np.empty(n, dtype=np.int64)
    pos = np.empty((n, 3), dtype=np.float64)
    for k in range(n):
        parts = lines[2 + k].split()
        z[k] = _SYMBOL[parts[0]]
        pos[k] = [_float(t) for t in parts[1:4]]
    smiles = lines[n + 3].split()
    return QM9Record(idx, z, pos, smiles[0],
                     smiles[1] if len(smiles) > 1 else None,
                     np.array([values[c] for c in _ARCHIVE_COLUMNS],
                              dtype=np.float64))


def read_qm9_archive(path: str) -> List[QM9Record]:
    """Reads every ``.xyz`` file of the official ``dsgdb9nsd.xyz.tar.bz2``
    (or any tar archive of such files), sorted by GDB index."""
    out = []
    with tarfile.open(path, 'r:*') as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith('.xyz')):
                continue
            text = tar.extractfile(member).read().decode('utf-8')
            try:
                out.append(parse_qm9_xyz(text))
            except (ValueError, IndexError, KeyError) as e:
                raise ValueError(f'{path}: cannot parse {member.name}: {e}') \
                    from None
    out.sort(key=lambda r: r.idx)
    return out


# --------------------------------------------------------------------------
# Per-molecule processing (runs in worker processes)
# --------------------------------------------------------------------------
def _to_numpy(data: Data) -> Dict:
    return {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in data}


def _from_numpy(d: Dict) -> Data:
    return Data(**{k: (torch.from_numpy(v) if isinstance(v, np.ndarray)
                       else v) for k, v in d.items()})


def _name(rec: QM9Record) -> str:
    """The official file stem of :obj:`rec`."""
    return f'dsgdb9nsd_{rec.idx:06d}'


def _labelled(data: Data, rec: QM9Record) -> Dict:
    """:obj:`data` with the labels and names of :obj:`rec`, as arrays."""
    data.y = torch.from_numpy(rec.y.astype(np.float32)).view(1, -1)
    data.idx = torch.tensor([rec.idx], dtype=torch.long)
    data.smiles = rec.smiles
    data.name = _name(rec)
    return _to_numpy(data)


def _without_graph(rec: QM9Record, remove_hs: bool) -> Dict:
    """:obj:`rec` featurized without its graph (geometry only)."""
    from pyg_unimol2.data.featurize import from_atoms
    return _labelled(from_atoms(rec.z, rec.pos, name=_name(rec),
                                remove_hs=remove_hs), rec)


def _process_one(args: Tuple[QM9Record, bool]):
    """Featurizes one molecule. Returns ``(data_dict, source, reasons)``
    where ``source`` is the template that matched (``'relaxed'``, ``'gdb'``)
    or ``None`` when the graph features were dropped."""
    from rdkit import rdBase

    from pyg_unimol2.data.xyz import from_xyz
    rec, remove_hs = args
    name = _name(rec)
    templates = []
    if rec.smiles_relaxed:
        templates.append(('relaxed', rec.smiles_relaxed))
    templates.append(('gdb', rec.smiles))
    reasons = []
    with rdBase.BlockLogs():
        for label, smi in templates:
            try:
                data = from_xyz(rec.z, rec.pos, smiles=smi, name=name,
                                remove_hs=remove_hs)
                return _labelled(data, rec), label, reasons
            except Exception as e:  # noqa: BLE001 (kept and reported)
                reasons.append(f'{label}: {e}')
    return _without_graph(rec, remove_hs), None, reasons


def _map(fn: Callable, items: Sequence, workers: int, progress: bool,
         desc: str) -> Iterator:
    """``fn(item)`` for every item, in order, in crash-safe worker processes
    (:func:`~pyg_unimol2.data.workers.imap_isolated`): an item that crashes
    its worker twice gives an
    :class:`~pyg_unimol2.data.workers.ItemFailure`."""
    from tqdm.auto import tqdm

    from pyg_unimol2.data.workers import imap_isolated, single_thread
    chunk = max(1, min(256, len(items) // (workers * 8)))
    outputs = imap_isolated(fn, items, workers, chunksize=chunk,
                            initializer=single_thread)
    with closing(outputs), tqdm(total=len(items), desc=desc,
                                disable=not progress,
                                mininterval=1.0) as bar:
        for out in outputs:
            yield out
            bar.update()


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------
class QM9(InMemoryDataset):
    r"""QM9 (Ramakrishnan et al., "Quantum chemistry structures and properties
    of 134 kilo molecules", Sci. Data 2014) featurized for Uni-Mol2, on the
    **B3LYP/6-31G(2df,p) geometries** of the data set (no generated
    conformers).

    Every molecule is a :class:`~torch_geometric.data.Data` as produced by
    :func:`pyg_unimol2.data.featurize.from_mol` (atoms in the order of the
    ``xyz`` file, hydrogens removed by default, :obj:`pos` = the DFT
    coordinates in Angstrom), plus

    * ``y`` ``[1, 12]`` float32: the targets of :data:`QM9_TARGETS`, in the
      units of the raw files, which are the units of the Uni-Mol2 paper:

      ===== === =========== ===== === ========= ===== === ===========
      name  col unit        name  col unit      name  col unit
      ===== === =========== ===== === ========= ===== === ===========
      mu    0   D           r2    5   bohr^2    h298  9   Ha
      alpha 1   bohr^3      zpve  6   Ha        g298  10  Ha
      homo  2   Ha          u0    7   Ha        cv    11  cal/(mol K)
      lumo  3   Ha          u298  8   Ha
      gap   4   Ha
      ===== === =========== ===== === ========= ===== === ===========

      (Ha = Hartree; ``gap = lumo - homo``; a typical HOMO is -0.24 Ha.)
      Stored as float32: total energies (|U0| < 720 Ha) are rounded to at
      most 3.1e-5 Ha (0.8 meV); the raw float64 values are in the source.
    * ``idx`` ``[1]``: the GDB index (``1..133885``), ``name``: the official
      file stem (``'dsgdb9nsd_000001'``), ``smiles``: the GDB-17 SMILES.

    **Graph/geometry matching.** The ``xyz`` atom order is not the SMILES
    order, so the graph is matched onto the geometry with
    :func:`pyg_unimol2.data.xyz.from_xyz`: first with the SMILES of the
    relaxed geometry (archive only; ``qm9pack`` does not ship it), then with
    the GDB-17 SMILES. A molecule that matches neither is **kept** with its
    graph features dropped (:func:`~pyg_unimol2.data.featurize.from_atoms`,
    ``has_graph=False``: element tokens and geometry only, as in the
    official "drop feature" mode) and listed in
    ``processed/<name>_report.csv`` (columns ``index`` = position in the
    dataset, ``gdb_idx``, ``name``, ``smiles``, ``smiles_relaxed``,
    ``status``, ``reason``); a molecule matched only by the GDB SMILES after
    the relaxed SMILES failed is listed with status ``fallback``. With
    ``qm9pack``, 3 of 130,831 molecules fail (GDB 133831, 133857, 133859:
    their relaxed geometries are bonded differently from their SMILES).
    Matching runs in crash-safe worker processes
    (:func:`~pyg_unimol2.data.workers.imap_isolated`): a molecule that
    crashes its worker twice is kept the same way, with reason ``worker
    crashed (...)``.

    Args:
        root (str): root folder; processed files go to ``root/processed``,
            the optional archive is looked for in ``root/raw``.
        remove_hs (bool): drop hydrogens (Uni-Mol2 always does).
            (default: :obj:`True`)
        subset (int, optional): keep only this many molecules, for fast
            jobs: the first ones in GDB order, or a random sample when
            :obj:`subset_seed` is given. (default: :obj:`None`: all)
        subset_seed (int, optional): seed of the random subset.
            (default: :obj:`None`: first :obj:`subset` molecules)
        source (str): ``'qm9pack'``, ``'archive'`` or ``'auto'`` (the
            archive if :obj:`raw_archive` is given or
            ``root/raw/dsgdb9nsd.xyz.tar.bz2`` exists, else ``qm9pack``).
            (default: :obj:`'auto'`)
        raw_archive (str, optional): path of a downloaded
            ``dsgdb9nsd.xyz.tar.bz2`` (read in place, not copied).
            (default: :obj:`None`)
        characterized_only (bool): with the archive, drop the 3,054
            molecules missing from ``qm9pack`` (the official
            ``uncharacterized.txt`` list). (default: :obj:`True`)
        workers (int, optional): processes used for featurization.
            (default: :obj:`None`: all CPUs)
        progress (bool): show a progress bar. (default: :obj:`True`)
        transform, pre_transform, pre_filter, force_reload: see
            :class:`~torch_geometric.data.InMemoryDataset`.

    The processed file name encodes the options, e.g.
    ``qm9_qm9pack_noH_all_v1.pt`` or ``qm9_archive_H_rand500s0_v1.pt``.
    """

    targets = QM9_TARGETS

    def __init__(self, root: str, *, remove_hs: bool = True,
                 subset: Optional[int] = None,
                 subset_seed: Optional[int] = None, source: str = 'auto',
                 raw_archive: Optional[str] = None,
                 characterized_only: bool = True,
                 workers: Optional[int] = None, progress: bool = True,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False, log: bool = True) -> None:
        if source not in ('auto', 'qm9pack', 'archive'):
            raise ValueError(f"source must be 'auto', 'qm9pack' or "
                             f"'archive', got {source!r}")
        if subset is not None and subset <= 0:
            raise ValueError(f'subset must be positive, got {subset}')
        self.remove_hs = remove_hs
        self.subset = subset
        self.subset_seed = subset_seed
        self.raw_archive = raw_archive
        self.characterized_only = characterized_only
        self.workers = workers
        self.progress = progress
        self.log = log
        if source == 'auto':
            found = raw_archive is not None or osp.exists(
                osp.join(root, 'raw', ARCHIVE_NAME))
            source = 'archive' if found else 'qm9pack'
        self.source = source
        super().__init__(root, transform, pre_transform, pre_filter,
                         log=log, force_reload=force_reload)
        self.load(self.processed_paths[0])

    # ------------------------------------------------------------------ paths
    @property
    def raw_file_names(self) -> List[str]:
        if self.source == 'archive' and self.raw_archive is None:
            return [ARCHIVE_NAME]
        return []

    @property
    def archive_path(self) -> str:
        return self.raw_archive or osp.join(self.raw_dir, ARCHIVE_NAME)

    @property
    def _stem(self) -> str:
        src = self.source
        if src == 'archive' and not self.characterized_only:
            src = 'archiveall'
        if self.subset is None:
            sub = 'all'
        elif self.subset_seed is None:
            sub = f'first{self.subset}'
        else:
            sub = f'rand{self.subset}s{self.subset_seed}'
        hs = 'noH' if self.remove_hs else 'H'
        return f'qm9_{src}_{hs}_{sub}_v{_FORMAT_VERSION}'

    @property
    def processed_file_names(self) -> List[str]:
        return [f'{self._stem}.pt', f'{self._stem}_report.csv']

    @property
    def report_path(self) -> str:
        """CSV listing the molecules whose graph could not be matched."""
        return self.processed_paths[1]

    def download(self) -> None:
        if self.source == 'qm9pack':
            return  # shipped with the qm9pack package
        if not osp.exists(self.archive_path):
            raise MissingFileError(
                f'QM9 archive not found at {self.archive_path}. Download '
                f'{ARCHIVE_NAME} from {ARCHIVE_URL} (collection: '
                f'{FIGSHARE_URL}) and pass raw_archive=PATH or put it in '
                f'{self.raw_dir}; or use source="qm9pack".')

    # ------------------------------------------------------------- processing
    def _records(self) -> List[QM9Record]:
        if self.source == 'qm9pack':
            first_n = self.subset if self.subset_seed is None else None
            records = read_qm9pack(limit=first_n)
        else:
            records = read_qm9_archive(self.archive_path)
            if self.characterized_only:
                keep = qm9pack_indices()
                records = [r for r in records if r.idx in keep]
        if self.subset is not None and self.subset < len(records):
            if self.subset_seed is None:
                records = records[:self.subset]
            else:
                rng = np.random.default_rng(self.subset_seed)
                pick = np.sort(rng.choice(len(records), self.subset,
                                          replace=False))
                records = [records[i] for i in pick.tolist()]
        return records

    def process(self) -> None:
        t0 = time.perf_counter()
        records = self._records()
        t_read = time.perf_counter() - t0
        workers = self.workers or os.cpu_count() or 1
        workers = max(1, min(workers, len(records) // 64 or 1))
        from pyg_unimol2.data.workers import ItemFailure
        data_list, rows = [], []
        items = [(r, self.remove_hs) for r in records]
        for out, rec in zip(_map(_process_one, items, workers, self.progress,
                                 'QM9 featurize'), records):
            if isinstance(out, ItemFailure):  # Kept without its graph.
                out = _without_graph(rec, self.remove_hs), None, [out.reason]
            d, source, reasons = out
            data = _from_numpy(d)
            if self.pre_filter is not None and not self.pre_filter(data):
                continue
            if self.pre_transform is not None:
                data = self.pre_transform(data)
            if source != _first_template(rec):
                rows.append({
                    'index': len(data_list),
                    'gdb_idx': rec.idx,
                    'name': data.name,
                    'smiles': rec.smiles,
                    'smiles_relaxed': rec.smiles_relaxed or '',
                    'status': 'graph_dropped' if source is None
                    else 'fallback',
                    'reason': ' | '.join(reasons),
                })
            data_list.append(data)
        self.save(data_list, self.processed_paths[0])
        _write_report(self.report_path, rows)
        dropped = sum(r['status'] == 'graph_dropped' for r in rows)
        self.processing_stats = {
            'molecules': len(data_list), 'graph_dropped': dropped,
            'fallback': len(rows) - dropped, 'read_s': t_read,
            'total_s': time.perf_counter() - t0, 'workers': workers}
        if self.log:
            print(f'QM9 ({self.source}): {len(data_list)} molecules in '
                  f'{time.perf_counter() - t0:.1f} s, {dropped} kept without '
                  f'graph features, {len(rows) - dropped} matched by the GDB '
                  f'SMILES after the relaxed SMILES failed; report: '
                  f'{self.report_path}')

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({len(self)}, source={self.source})'


def _first_template(rec: QM9Record) -> str:
    """Label of the first template tried for :obj:`rec`."""
    return 'relaxed' if rec.smiles_relaxed else 'gdb'


_REPORT_FIELDS = ['index', 'gdb_idx', 'name', 'smiles', 'smiles_relaxed',
                  'status', 'reason']


def _write_report(path: str, rows: Iterable[Dict]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=_REPORT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_report(path: str) -> List[Dict[str, str]]:
    """Reads a failure report written by :class:`QM9`."""
    with open(path, newline='') as f:
        return list(csv.DictReader(f))
