"""Seeded train/validation/test splits: random, Bemis-Murcko scaffold and
scaffold similarity (scaffolds clustered by fingerprint similarity);
k-fold cross-validation folds (random or scaffold,
:func:`kfold_split`); and splits given by a column of the data file
(:func:`column_split`).

Splits are index arrays into a dataset. :func:`save_split` / :func:`load_split`
store them as ``.npz`` files so that an experiment can be repeated on exactly
the same molecules.
"""
import heapq
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

from ..errors import ConfigError, InputError

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


def _scaffold_groups(smiles: Sequence[str]) -> List[List[int]]:
    """Indices of the molecules sharing each Bemis-Murcko scaffold, in
    order of first appearance (acyclic molecules form one group)."""
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, smi in enumerate(smiles):
        groups[murcko_scaffold(smi)].append(i)
    return list(groups.values())


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
    n = len(smiles)
    n_valid, n_test = int(round(valid_frac * n)), int(round(test_frac * n))

    return _assign(_scaffold_groups(smiles), n_valid, n_test,
                   np.random.default_rng(seed))


def _assign(groups: List[List[int]], n_valid: int, n_test: int,
            rng: np.random.Generator) -> Split:
    """Visits groups in a seeded order, those larger than half the test size
    first, and puts each into the first of test, valid, train it fits."""
    order = rng.permutation(len(groups))
    big = [groups[i] for i in order if len(groups[i]) > n_test / 2]
    small = [groups[i] for i in order if len(groups[i]) <= n_test / 2]
    parts: Dict[str, List[int]] = dict(train=[], valid=[], test=[])
    for group in big + small:
        if len(parts['test']) + len(group) <= n_test:
            parts['test'] += group
        elif len(parts['valid']) + len(group) <= n_valid:
            parts['valid'] += group
        else:
            parts['train'] += group
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in parts.items()}


def _fingerprints(smiles: Sequence[str], radius: int = 2,
                  size: int = 2048) -> list:
    """Morgan bit vectors; scaffold SMILES that RDKit cannot kekulize again
    are read unsanitized (ring perception only)."""
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius,
                                                    fpSize=size)
    return [gen.GetFingerprint(_parse_loose(s)) for s in smiles]


def _parse_loose(smiles: str) -> Chem.Mol:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
        mol.UpdatePropertyCache(strict=False)
        Chem.FastFindRings(mol)
    return mol


def scaffold_similarity_split(smiles: Sequence[str],
                              fractions: Sequence[float] = (0.8, 0.1, 0.1),
                              seed: int = 0,
                              threshold: float = 0.4) -> Split:
    r"""Scaffold-similarity split: similar scaffolds always land in the same
    part, so test scaffolds are dissimilar from training ones.

    1. Bemis-Murcko scaffolds; each distinct non-empty scaffold gets a Morgan
       fingerprint (radius 2, 2,048 bits).
    2. Sphere-exclusion (leader) clustering in a seeded random order: an
       unassigned scaffold opens a cluster and claims the unassigned
       scaffolds whose Tanimoto similarity to it is at least
       :obj:`threshold`, most similar first, up to a quarter of the test
       fraction of all scaffolds (so that data sets of mutually similar
       scaffolds, such as COMPAS-1D's polybenzenoids, still split into
       several clusters).
       Acyclic molecules (empty scaffold) form one cluster.
    3. Clusters (with all their molecules) are assigned like
       :func:`scaffold_split`: large clusters to training, then each to the
       first of test, valid, train it fits.

    :func:`scaffold_test_similarity` measures the result.
    """
    _, valid_frac, test_frac = _check_fractions(fractions)
    by_scaffold: Dict[str, List[int]] = defaultdict(list)
    for i, smi in enumerate(smiles):
        by_scaffold[murcko_scaffold(smi)].append(i)
    acyclic = by_scaffold.pop('', [])
    names = list(by_scaffold)
    fps = _fingerprints(names)
    rng = np.random.default_rng(seed)
    cap = max(1, int(test_frac * len(names) / 4))
    cluster = np.full(len(names), -1)
    for leader in rng.permutation(len(names)):
        if cluster[leader] >= 0:
            continue
        cluster[leader] = leader
        sims = np.asarray(DataStructs.BulkTanimotoSimilarity(fps[leader], fps))
        claim = np.flatnonzero((sims >= threshold) & (cluster < 0))
        claim = claim[np.argsort(-sims[claim], kind='stable')][:cap - 1]
        cluster[claim] = leader
    groups: Dict[int, List[int]] = defaultdict(list)
    for name, c in zip(names, cluster.tolist()):
        groups[c] += by_scaffold[name]
    members = list(groups.values()) + ([acyclic] if acyclic else [])
    n = len(smiles)
    return _assign(members, int(round(valid_frac * n)),
                   int(round(test_frac * n)), rng)


def scaffold_test_similarity(smiles: Sequence[str], split: Split) -> float:
    """Mean, over the distinct non-empty scaffolds of the test part, of the
    largest Tanimoto similarity (Morgan radius 2, 2,048 bits) to any
    training scaffold: lower means a harder, more out-of-distribution test
    set."""
    def scaffolds(part: str) -> List[str]:
        return sorted({murcko_scaffold(smiles[i]) for i in split[part]} - {''})
    train_fps = _fingerprints(scaffolds('train'))
    test_fps = _fingerprints(scaffolds('test'))
    if not train_fps or not test_fps:
        return float('nan')
    return float(np.mean([max(DataStructs.BulkTanimotoSimilarity(fp,
                                                                 train_fps))
                          for fp in test_fps]))


def _carve_valid(groups: List[List[int]], valid_fraction: float,
                 rng: np.random.Generator) -> Split:
    """Train/valid parts of :obj:`groups` (whole groups, visited in a
    seeded order, join valid while it holds at most :obj:`valid_fraction`
    of their items, and at least one item stays in train); the test part
    is empty."""
    total = sum(len(g) for g in groups)
    n_valid = min(int(round(valid_fraction * total)), total - 1)
    return _assign(groups, n_valid, 0, rng)


def kfold_split(smiles: Sequence[str], k: int = 5, fold: int = 0,
                kind: str = 'random', seed: int = 0,
                valid_fraction: float = 0.1) -> Split:
    r"""Fold :obj:`fold` of a seeded :obj:`k`-fold cross-validation
    (unimol_tools' ``MolTrain`` uses 5 folds).

    The molecules (``kind='random'``) or whole Bemis-Murcko scaffold groups
    (``kind='scaffold'``) are dealt into :obj:`k` disjoint folds: in a
    seeded order, largest groups first, each joins the currently smallest
    fold (the lowest-numbered of equally small ones), so fold sizes differ
    by at most one molecule for random folds and are as even as the groups
    allow for scaffold folds. The same :obj:`seed` gives the same folds for
    every :obj:`fold`, so folds ``0..k-1`` test every molecule once.

    Fold :obj:`fold` is the test part; a seeded :obj:`valid_fraction` of
    the other molecules (whole scaffold groups for ``kind='scaffold'``) is
    the validation part and the rest the training part.

    Args:
        smiles (Sequence[str]): the molecules, ``N`` SMILES.
        k (int): number of folds, at least 2. (default: :obj:`5`)
        fold (int): the test fold, ``0 <= fold < k``. (default: :obj:`0`)
        kind (str): ``'random'`` or ``'scaffold'``. (default:
            ``'random'``)
        seed (int): seed of the folds and of the validation part.
            (default: :obj:`0`)
        valid_fraction (float): fraction of the non-test molecules that
            validate, ``0 <= valid_fraction < 1``. (default: :obj:`0.1`)

    Returns:
        Split: sorted ``int64`` index arrays ``train``, ``valid``, ``test``
        into ``range(N)``, disjoint and together covering it.

    Raises:
        ValueError: invalid :obj:`k`, :obj:`fold`, :obj:`kind` or
            :obj:`valid_fraction`, or fewer molecules (scaffold groups)
            than folds.
    """
    if k < 2:
        raise ConfigError(f'k-fold cross-validation needs k >= 2 folds, '
                          f'got k={k} (--folds)')
    if not 0 <= fold < k:
        raise ValueError(f'fold must be in 0..{k - 1} for k={k}, '
                         f'got {fold}')
    if not 0 <= valid_fraction < 1:
        raise ValueError(f'valid_fraction must be in [0, 1), got '
                         f'{valid_fraction}')
    if kind == 'random':
        groups = [[i] for i in range(len(smiles))]
    elif kind == 'scaffold':
        groups = _scaffold_groups(smiles)
    else:
        raise ValueError(f"unknown k-fold kind {kind!r}; expected 'random' "
                         f"or 'scaffold'")
    if len(groups) < k:
        what = 'molecules' if kind == 'random' else 'scaffold groups'
        raise InputError(f'{k} folds need at least {k} {what}, got '
                         f'{len(groups)} (use fewer --folds)')
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    order = order[np.argsort([-len(groups[i]) for i in order],
                             kind='stable')]
    folds: List[List[List[int]]] = [[] for _ in range(k)]
    sizes = [(0, f) for f in range(k)]  # a heap of (size, fold)
    for i in order:
        size, f = heapq.heappop(sizes)
        folds[f].append(groups[i])
        heapq.heappush(sizes, (size + len(groups[i]), f))
    rest = [g for f in range(k) if f != fold for g in folds[f]]
    split = _carve_valid(rest, valid_fraction, rng)
    split['test'] = np.sort(np.asarray(
        [i for g in folds[fold] for i in g], dtype=np.int64))
    return split


#: Values of a split column (lower case) and the part each names.
COLUMN_SPLIT_VALUES = {'train': 'train', 'valid': 'valid', 'val': 'valid',
                       'validation': 'valid', 'dev': 'valid', 'test': 'test'}


def column_split(values: Sequence[str], seed: int = 0,
                 valid_fraction: float = 0.1) -> Split:
    r"""The split a column of the data file gives, one value per molecule:
    ``train``, ``valid`` (or ``val``, ``validation``, ``dev``) or ``test``,
    case and surrounding whitespace ignored.

    When no molecule is marked for validation (MoleculeACE marks only
    train and test), a seeded random :obj:`valid_fraction` of the training
    molecules validates instead.

    Args:
        values (Sequence[str]): the column, ``N`` values.
        seed (int): seed of the validation part carved from training.
            (default: :obj:`0`)
        valid_fraction (float): fraction of the training molecules carved
            out when none is marked valid, ``0 <= valid_fraction < 1``.
            (default: :obj:`0.1`)

    Returns:
        Split: sorted ``int64`` index arrays ``train``, ``valid``, ``test``
        into ``range(N)``.

    Raises:
        ValueError: a value that names no part (the message gives the value
            and the first row, counted from 0, holding it), no training or
            no test molecule, or an invalid :obj:`valid_fraction`.
    """
    if not 0 <= valid_fraction < 1:
        raise ValueError(f'valid_fraction must be in [0, 1), got '
                         f'{valid_fraction}')
    parts: Dict[str, List[int]] = dict(train=[], valid=[], test=[])
    for i, value in enumerate(values):
        part = COLUMN_SPLIT_VALUES.get(str(value).strip().lower())
        if part is None:
            raise InputError(
                f'split column: unknown value {value!r} in row {i} (accepted, '
                f'case-insensitive: {", ".join(COLUMN_SPLIT_VALUES)})')
        parts[part].append(i)
    for part in ('train', 'test'):
        if not parts[part]:
            raise InputError(f"split column: no row is marked '{part}'")
    split = {k: np.asarray(v, dtype=np.int64) for k, v in parts.items()}
    if not parts['valid']:
        carved = _carve_valid([[i] for i in parts['train']], valid_fraction,
                              np.random.default_rng(seed))
        split.update(train=carved['train'], valid=carved['valid'])
    return split


def save_split(split: Split, path: Union[str, Path]) -> None:
    """Writes a split to an ``.npz`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: split[k] for k in SPLIT_NAMES})


def load_split(path: Union[str, Path]) -> Split:
    """Reads a split written by :func:`save_split`."""
    with np.load(path) as f:
        return {k: f[k] for k in SPLIT_NAMES}


SPLIT_KINDS = ('random', 'scaffold', 'scaffold_similarity')


def make_split(kind: str, smiles: Sequence[str],
               fractions: Sequence[float] = (0.8, 0.1, 0.1),
               seed: int = 0) -> Split:
    """The split of the given kind (one of :data:`SPLIT_KINDS`)."""
    if kind == 'random':
        return random_split(len(smiles), fractions, seed)
    if kind == 'scaffold':
        return scaffold_split(smiles, fractions, seed)
    if kind == 'scaffold_similarity':
        return scaffold_similarity_split(smiles, fractions, seed)
    raise ValueError(f'unknown split {kind!r}; expected one of {SPLIT_KINDS}')
