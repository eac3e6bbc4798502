"""Several conformers per molecule, test-time averaging, and the
"dropped features" input mode of the official fine-tuning recipe.

Official recipe (reference D.1-D.2): each training epoch draws one conformer
per molecule uniformly; validation and test score the **average** of the
predictions over all ``conf_size`` conformers (11 in the README); with
``drop_feat_prob = 1`` the model sees only elements and geometry (A.10).

Conformer 0 is the dataset's own geometry (the DFT geometry for QM9, the
seeded ETKDG conformer for COMPAS-1D); the others are
:func:`~pyg_unimol2.data.featurize.from_smiles` with the seeds of
:func:`conformer_seeds` (2, 3, ...: RDKit embeds seeds 0 and 1 alike). Atom order
may differ between conformers, which a permutation-invariant model ignores.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from ..data.encoding import dropped_codes
from ..data.featurize import featurize_smiles

#: The attributes a conformer keeps (model inputs, target, molecule index).
MODEL_KEYS = ('z', 'x', 'atom_feat', 'degree', 'pos', 'edge_index',
              'edge_attr', 'spd', 'pair_feat', 'pair_type', 'has_graph', 'y',
              'atom_y')


#: ``(smiles, seed) -> Data`` (:obj:`None`: embedding failed).
_CACHE: Dict[Tuple[str, int], Optional[Data]] = {}


def drop_graph_features(data: Data) -> Data:
    """A copy of :obj:`data` whose graph features take the official dropped
    codes (reference A.10): only elements and coordinates remain."""
    atom_feat, degree, pair_feat, spd, pair_type = dropped_codes(data.num_nodes)
    n2 = data.num_nodes ** 2
    out = data.clone()
    out.atom_feat = torch.from_numpy(atom_feat)
    out.degree = torch.from_numpy(degree)
    out.pair_feat = torch.from_numpy(pair_feat.reshape(n2, 3))
    out.spd = torch.from_numpy(spd.reshape(n2))
    out.pair_type = torch.from_numpy(pair_type.reshape(n2, 2))
    out.has_graph = torch.zeros(1, dtype=torch.bool)
    return out


def _view(data: Data, labels: Data, mol: int, drop_feat: bool) -> Data:
    """The model inputs of :obj:`data` with the labels of :obj:`labels`
    (atom labels only where the atoms are the same, in the same order)."""
    out = Data(**{k: data[k] for k in MODEL_KEYS if k not in ('y', 'atom_y')
                  and k in data})
    out.y = labels.y
    if 'atom_y' in labels:
        out.atom_y = labels.atom_y if torch.equal(data.z, labels.z) else \
            torch.full_like(labels.atom_y, float('nan'))
    out.mol = torch.tensor([mol])
    return drop_graph_features(out) if drop_feat else out


def conformer_seeds(seed: int, conformers: int) -> List[int]:
    """The ETKDG seeds of :obj:`conformers` conformers: :obj:`seed`, then
    the following ones. RDKit's generator (``minstd_rand``) takes seed 0 as
    seed 1, so both give the same conformer: after 0 comes 2
    (``[0, 2, 3, ...]``)."""
    after = max(seed, 1)
    return [seed] + list(range(after + 1, after + conformers))


def build_conformers(molecules: Sequence[Data], num_conformers: int = 1, *,
                     drop_feat: bool = False, workers: Optional[int] = None,
                     progress: bool = False) -> List[List[Data]]:
    """For each molecule, :obj:`num_conformers` model-ready copies.

    A conformer that cannot be embedded is replaced by conformer 0, so every
    molecule has exactly :obj:`num_conformers` entries. Each entry holds
    ``mol`` (the molecule's position in :obj:`molecules`) for averaging.
    Generated conformers are kept for the life of the process, so runs over
    several targets, seeds or feature modes embed each molecule once.
    """
    molecules = list(molecules)
    confs = [[_view(d, d, i, drop_feat)] for i, d in enumerate(molecules)]
    for seed in conformer_seeds(0, num_conformers)[1:]:
        todo = sorted({d.smiles for d in molecules
                       if (d.smiles, seed) not in _CACHE})
        if todo:
            result = featurize_smiles(todo, seed=seed, workers=workers,
                                      progress=progress)
            made = dict(zip(result.indices, result.data))
            _CACHE.update({(smi, seed): made.get(j)
                           for j, smi in enumerate(todo)})
        for i, d in enumerate(molecules):
            conf = _CACHE[d.smiles, seed]
            confs[i].append(confs[i][0] if conf is None else
                            _view(conf, d, i, drop_feat))
    return confs


class RandomConformer(Dataset):
    """Training view: item ``i`` is a uniformly drawn conformer of molecule
    ``i``, a function of ``(seed, epoch, i)`` (:meth:`set_epoch`), so that
    seeded runs and resumed runs draw the same conformers."""
    def __init__(self, conformers: List[List[Data]], seed: int = 0) -> None:
        self.conformers = conformers
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.conformers)

    def __getitem__(self, index: int) -> Data:
        options = self.conformers[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return options[int(rng.integers(len(options)))]


def all_conformers(conformers: List[List[Data]]) -> List[Data]:
    """Evaluation view: every conformer of every molecule, flattened."""
    return [c for options in conformers for c in options]


def average_by_molecule(values: Tensor, mol: Tensor) -> Tensor:
    """Test-time averaging: the mean of the rows of :obj:`values` ``[N,
    ...]`` that share a molecule id in :obj:`mol` ``[N]``, one row per
    molecule in increasing id order."""
    _, mol = torch.unique(mol, return_inverse=True)
    return scatter(values, mol, dim=0, reduce='mean')
