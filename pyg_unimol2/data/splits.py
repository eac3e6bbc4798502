"""Seeded train/validation/test splits: random and Bemis-Murcko scaffold.

Splits are index arrays into a dataset. :func:`save_split` / :func:`load_split`
store them as ``.npz`` files so that an experiment can be repeated on exactly
the same molecules.
"""
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

Split = Dict[str, np.ndarray]
SPLIT_NAMES = ('train', 'valid', 'test')


def _check_fractions(fractions: Sequence[float]) -> Tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or \
            abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f'fractions must be three non-negative numbers that '
                         f'sum to 1, got {tuple(fractions)}')
    return tuple(fractions)


def random_split(num_items: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 seed: int = 0) -> Split:
    """Shuffles ``range(num_items)`` with :obj:`seed` and cuts it into
    train/valid/test parts of the given :obj:`fractions`."""
    train_frac, valid_frac, _ = _check_fractions(fractions)
    perm = np.random.default_rng(seed).permutation(num_items)
    n_train = int(round(train_frac * num_items))
    n_valid = int(round(valid_frac * num_items))
    return dict(train=np.sort(perm[:n_train]),
                valid=np.sort(perm[n_train:n_train + n_valid]),
                test=np.sort(perm[n_train + n_valid:]))


def murcko_scaffold(smiles: str, include_chirality: bool = False) -> str:
    """The Bemis-Murcko scaffold SMILES of a molecule (``''`` for acyclic
    molecules and for SMILES RDKit cannot parse)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ''
    return MurckoScaffold.MurckoScaffoldSmiles(
        mol=mol, includeChirality=include_chirality)


def scaffold_split(smiles: Sequence[str],
                   fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   seed: int = 0) -> Split:
    """Bemis-Murcko scaffold split: molecules sharing a scaffold always land in
    the same part.

    Scaffold groups are visited in a seeded random order, with groups larger
    than half the test size first (so big groups go to training, as in the
    usual "balanced scaffold" split); each group joins the first part, in the
    order test, valid, train, that it fits into, and otherwise train.
    """
    _, valid_frac, test_frac = _check_fractions(fractions)
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, smi in enumerate(smiles):
        groups[murcko_scaffold(smi)].append(i)
    n = len(smiles)
    n_valid, n_test = int(round(valid_frac * n)), int(round(test_frac * n))

    rng = np.random.default_rng(seed)
    sets = list(groups.values())
    order = rng.permutation(len(sets))
    big = [sets[i] for i in order if len(sets[i]) > n_test / 2]
    small = [sets[i] for i in order if len(sets[i]) <= n_test / 2]

    parts: Dict[str, List[int]] = dict(train=[], valid=[], test=[])
    for group in big + small:
        if len(parts['test']) + len(group) <= n_test:
            parts['test'] += group
        elif len(parts['valid']) + len(group) <= n_valid:
            parts['valid'] += group
        else:
            parts['train'] += group
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


def save_split(split: Split, path: Union[str, Path]) -> None:
    """Writes a split to an ``.npz`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: split[k] for k in SPLIT_NAMES})


def load_split(path: Union[str, Path]) -> Split:
    """Reads a split written by :func:`save_split`."""
    with np.load(path) as f:
        return {k: f[k] for k in SPLIT_NAMES}
