"""Seeded train/validation/test splits: random, Bemis-Murcko scaffold and
scaffold similarity (scaffolds clustered by fingerprint similarity).

Splits are index arrays into a dataset. :func:`save_split` / :func:`load_split`
store them as ``.npz`` files so that an experiment can be repeated on exactly
the same molecules.
"""
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
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

    return _assign(list(groups.values()), n_valid, n_test,
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
