r"""COMPAS-1D: 8,678 cata-condensed polybenzenoid hydrocarbons (COMPAS
Project, phase 1), the COMPAS-1D benchmark of the Uni-Mol2 paper.

Official home: https://gitlab.com/porannegroup/compas (file
``COMPAS-1D.csv`` of the original B3LYP-D3BJ/def2-SVP release). Licence:
**CC BY-NC-SA** (attribution, non-commercial use only, share-alike); anything
derived from the file inherits these terms. Cite: A. Wahab, L. Pfuderer,
E. Paenurk, R. Gershoni-Poranne, J. Chem. Inf. Model. 2022, 62, 3704-3713
(doi:10.1021/acs.jcim.2c00503).

The CSV has no geometries, so conformers are generated from the SMILES with
:func:`pyg_unimol2.data.featurize.featurize_smiles` (ETKDGv3 + MMFF94, seeded).
"""
import csv
import hashlib
import os.path as osp
import time
from typing import Callable, Dict, List, NamedTuple, Optional

import numpy as np
import torch
from torch_geometric.data import InMemoryDataset

from ..errors import InputError, MissingFileError

__all__ = ['COMPAS1D', 'COMPAS1D_TARGETS', 'CompasTarget']

CSV_NAME = 'compas-1D_b3lyp-d3bj_def2-svp.csv'
CSV_SHA256 = '6df5abcd2a0580f06620aaf5d6fd2050949ec39e1a39665b3718daf20b1cb08b'
OFFICIAL_URL = 'https://gitlab.com/porannegroup/compas'
NUM_MOLECULES = 8678
_FORMAT_VERSION = 1


class CompasTarget(NamedTuple):
    """One regression target: its column in ``y``, unit, CSV column and
    description."""
    index: int
    unit: str
    column: str
    description: str


#: Targets in the order of the columns of ``y``: the four of the Uni-Mol2
#: paper's COMPAS-1D table (aEA, aIP, dispersion, dipole moment) followed by
#: HOMO, LUMO, gap and relative energy. Units as in the CSV (eV, Debye).
COMPAS1D_TARGETS: Dict[str, CompasTarget] = {
    'aEA': CompasTarget(0, 'eV', 'aEA_eV',
                        'adiabatic electron affinity as E(anion) - '
                        'E(neutral): positive = anion above the neutral'),
    'aIP': CompasTarget(1, 'eV', 'aIP_eV',
                        'adiabatic ionization potential E(cation) - '
                        'E(neutral)'),
    'dispersion': CompasTarget(2, 'eV', 'dispersion_eV',
                               'D3BJ dispersion correction to the total '
                               'energy'),
    'dipmom': CompasTarget(3, 'D', 'Dipmom_Debye', 'dipole moment'),
    'homo': CompasTarget(4, 'eV', 'HOMO_eV', 'HOMO energy'),
    'lumo': CompasTarget(5, 'eV', 'LUMO_eV', 'LUMO energy'),
    'gap': CompasTarget(6, 'eV', 'GAP_eV', 'HOMO-LUMO gap'),
    'erel': CompasTarget(7, 'eV', 'Erel_eV',
                         'energy relative to the most stable isomer of the '
                         'same formula'),
}


def read_compas_csv(path: str) -> List[Dict[str, str]]:
    """Rows of the COMPAS-1D B3LYP-D3BJ/def2-SVP CSV, checking its columns."""
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise InputError(f'{path}: empty file')
    missing = [c for c in ['molecule', 'smiles'] +
               [t.column for t in COMPAS1D_TARGETS.values()]
               if c not in rows[0]]
    if missing:
        raise InputError(f'{path}: not the COMPAS-1D B3LYP-D3BJ/def2-SVP '
                         f'CSV (missing columns {missing})')
    return rows


class COMPAS1D(InMemoryDataset):
    r"""COMPAS-1D (B3LYP-D3BJ/def2-SVP) featurized for Uni-Mol2.

    The data are **not downloaded and not copied**: pass :obj:`csv_path`
    (read in place), or put ``compas-1D_b3lyp-d3bj_def2-svp.csv`` (the
    official ``COMPAS-1D.csv`` of https://gitlab.com/porannegroup/compas,
    renamed) in ``root/raw/``. Licence CC BY-NC-SA (non-commercial).

    Each molecule is a :class:`~torch_geometric.data.Data` from
    :func:`~pyg_unimol2.data.featurize.featurize_smiles`: one RDKit
    conformer (ETKDGv3 seeded with :obj:`seed`, MMFF94-optimized), heavy atoms
    only by default, plus

    * ``y`` ``[1, 8]`` float32, in the CSV's units (see
      :data:`COMPAS1D_TARGETS`):

      === ============ ====== ===== ======== ======
      col name         unit   col   name     unit
      === ============ ====== ===== ======== ======
      0   aEA          eV     4     homo     eV
      1   aIP          eV     5     lumo     eV
      2   dispersion   eV     6     gap      eV
      3   dipmom       Debye  7     erel     eV
      === ============ ====== ===== ======== ======

      **aEA sign.** The CSV's ``aEA_eV`` is ``E(anion) - E(neutral)``
      (= ``Etot_neg_eV - Etot_eV``), i.e. minus the conventional electron
      affinity: it is positive (+0.524 eV for naphthalene) when the anion lies
      above the neutral molecule and becomes negative for larger PBHs. It is
      kept as in the CSV. The Uni-Mol2 paper reports MAEs only, which do not
      depend on this sign. ``aIP_eV = E(cation) - E(neutral)``;
      ``dispersion_eV = Etot_eV - Etot_SCF_eV`` (negative).
    * ``idx`` ``[1]``: row number in the CSV (0-based), ``name``: the COMPAS
      identifier (e.g. ``'hc_c14h10_0pent_1'``), ``smiles``: the CSV SMILES,
      ``n_rings`` ``[1]``.

    **Failures.** Helicene-like PBHs (e.g. ``hc_c26h16_0pent_12``,
    [6]helicene) cannot satisfy ETKDGv3's flat-aromatic-ring knowledge; the
    featurizer then embeds them without it (see
    :data:`pyg_unimol2.data.featurize.EMBED_ATTEMPTS`), so they are kept.
    Molecules that cannot be featurized at all are skipped and listed in
    ``processed/<name>_failures.csv`` (columns ``index`` = CSV row,
    ``molecule``, ``smiles``, ``reason``) and counted on stdout.

    Args:
        root (str): root folder for ``processed/`` (and ``raw/``).
        csv_path (str, optional): path of the CSV, read in place.
            (default: :obj:`None`:
            ``root/raw/compas-1D_b3lyp-d3bj_def2-svp.csv``)
        remove_hs (bool): drop hydrogens. (default: :obj:`True`)
        subset (int, optional): keep only this many molecules, for fast
            jobs: the first rows, or a random sample when :obj:`subset_seed`
            is given. (default: :obj:`None`: all)
        subset_seed (int, optional): seed of the random subset
            (``numpy.random.default_rng``). (default: :obj:`None`: first
            rows)
        seed (int): ETKDG seed of every molecule. (default: :obj:`0`)
        optimize (bool): MMFF94-optimize the conformers.
            (default: :obj:`True`)
        workers (int, optional): featurization processes.
            (default: :obj:`None`: all CPUs)
        progress (bool): progress bar. (default: :obj:`True`)
        check_sha256 (bool): verify the CSV is the known release.
            (default: :obj:`False`)
        transform, pre_transform, pre_filter, force_reload: see
            :class:`~torch_geometric.data.InMemoryDataset`.
    """

    targets = COMPAS1D_TARGETS

    def __init__(self, root: str, *, csv_path: Optional[str] = None,
                 remove_hs: bool = True, subset: Optional[int] = None,
                 subset_seed: Optional[int] = None, seed: int = 0,
                 optimize: bool = True,
                 workers: Optional[int] = None, progress: bool = True,
                 check_sha256: bool = False,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None,
                 force_reload: bool = False, log: bool = True) -> None:
        if subset is not None and subset <= 0:
            raise ValueError(f'subset must be positive, got {subset}')
        self.csv_path = csv_path
        self.remove_hs = remove_hs
        self.subset = subset
        self.subset_seed = subset_seed
        self.seed = seed
        self.optimize = optimize
        self.workers = workers
        self.progress = progress
        self.check_sha256 = check_sha256
        super().__init__(root, transform, pre_transform, pre_filter,
                         log=log, force_reload=force_reload)
        self.load(self.processed_paths[0])

    @property
    def raw_file_names(self) -> List[str]:
        return [] if self.csv_path is not None else [CSV_NAME]

    @property
    def source_path(self) -> str:
        return self.csv_path or osp.join(self.raw_dir, CSV_NAME)

    @property
    def _stem(self) -> str:
        if self.subset is None:
            sub = 'all'
        elif self.subset_seed is None:
            sub = f'first{self.subset}'
        else:
            sub = f'rand{self.subset}s{self.subset_seed}'
        hs = 'noH' if self.remove_hs else 'H'
        opt = 'mmff' if self.optimize else 'etkdg'
        return (f'compas1d_b3lyp_{hs}_{sub}_{opt}_s{self.seed}'
                f'_v{_FORMAT_VERSION}')

    @property
    def processed_file_names(self) -> List[str]:
        return [f'{self._stem}.pt', f'{self._stem}_failures.csv']

    @property
    def report_path(self) -> str:
        """CSV listing the molecules that could not be featurized."""
        return self.processed_paths[1]

    def download(self) -> None:
        if not osp.exists(self.source_path):
            raise MissingFileError(
                f'COMPAS-1D CSV not found at {self.source_path}. Download '
                f'COMPAS-1D.csv (B3LYP-D3BJ/def2-SVP) from {OFFICIAL_URL} '
                f'(licence CC BY-NC-SA), then pass csv_path=PATH or save it '
                f'as {osp.join(self.raw_dir, CSV_NAME)}.')

    def process(self) -> None:
        from pyg_unimol2.data.featurize import featurize_smiles
        t0 = time.perf_counter()
        path = self.source_path
        if not osp.exists(path):
            self.download()
        if self.check_sha256:
            with open(path, 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if digest != CSV_SHA256:
                raise InputError(f'{path}: sha256 {digest} is not the '
                                 f'COMPAS-1D release ({CSV_SHA256})')
        rows = read_compas_csv(path)
        positions = list(range(len(rows)))
        if self.subset is not None and self.subset < len(rows):
            if self.subset_seed is None:
                positions = positions[:self.subset]
            else:
                rng = np.random.default_rng(self.subset_seed)
                positions = np.sort(rng.choice(len(rows), self.subset,
                                               replace=False)).tolist()
        rows = [rows[i] for i in positions]
        columns = [t.column for t in COMPAS1D_TARGETS.values()]
        y = torch.tensor([[float(r[c]) for c in columns] for r in rows],
                         dtype=torch.float32)
        result = featurize_smiles([r['smiles'] for r in rows],
                                  workers=self.workers, seed=self.seed,
                                  progress=self.progress,
                                  remove_hs=self.remove_hs,
                                  optimize=self.optimize)
        by_index = dict(zip(result.indices, result.data))
        report = [[positions[fail.index], rows[fail.index]['molecule'],
                   fail.smiles, fail.reason] for fail in result.failures]
        data_list = []
        for i in sorted(by_index):
            data, row = by_index[i], rows[i]
            data.y = y[i].view(1, -1)
            data.idx = torch.tensor([positions[i]], dtype=torch.long)
            data.name = row['molecule']
            data.smiles = row['smiles']
            data.n_rings = torch.tensor([int(row['n_rings'])])
            if self.pre_filter is not None and not self.pre_filter(data):
                continue
            if self.pre_transform is not None:
                data = self.pre_transform(data)
            data_list.append(data)
        self.save(data_list, self.processed_paths[0])
        with open(self.report_path, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['index', 'molecule', 'smiles', 'reason'])
            writer.writerows(report)
        self.processing_stats = {
            'molecules': len(data_list), 'skipped': len(report),
            'total_s': time.perf_counter() - t0}
        if self.log:
            print(f'COMPAS-1D: {len(data_list)} of {len(rows)} molecules in '
                  f'{time.perf_counter() - t0:.1f} s; {len(report)} skipped '
                  f'(report: {self.report_path})')

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({len(self)})'

