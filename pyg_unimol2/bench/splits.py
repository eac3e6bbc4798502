"""Split glue for the benchmark scripts: seeded, saved, measured splits and
the stratified limited-data training subsets of the paper's Table 6."""
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from ..data.splits import (Split, load_split, make_split, save_split,
                           scaffold_test_similarity)


def prepare_split(smiles: Sequence[str], kind: str, seed: int,
                  path: Path) -> Dict[str, object]:
    """Loads the split saved at :obj:`path` or makes and saves it; returns
    it with its sizes and the mean max Tanimoto similarity of test to
    training scaffolds (:func:`scaffold_test_similarity`)."""
    path = Path(path)
    if path.exists():
        split = load_split(path)
    else:
        split = make_split(kind, smiles, seed=seed)
        save_split(split, path)
    return dict(split=split, kind=kind, seed=seed, path=str(path),
                sizes={k: len(v) for k, v in split.items()},
                test_train_scaffold_tanimoto=round(
                    scaffold_test_similarity(smiles, split), 4))


def stratified_subset(pool: np.ndarray, pool_values: np.ndarray,
                      test_values: np.ndarray, size: int, bins: int = 10,
                      seed: int = 0) -> np.ndarray:
    """``size`` indices from :obj:`pool` whose values follow the test set's
    distribution: the test values' quantiles cut ``bins`` bins, and each bin
    receives an equal share of ``size`` (the remainder going to randomly
    chosen bins), drawn without replacement from the pool molecules in it.
    A bin with too few pool molecules is filled from the rest of the pool.
    """
    rng = np.random.default_rng(seed)
    bins = max(1, min(bins, size))
    edges = np.quantile(test_values, np.linspace(0, 1, bins + 1))[1:-1]
    which = np.searchsorted(edges, pool_values, side='right')
    share = np.full(bins, size // bins)
    share[rng.choice(bins, size % bins, replace=False)] += 1
    chosen = []
    for b in range(bins):
        members = pool[which == b]
        chosen += rng.choice(members, min(share[b], len(members)),
                             replace=False).tolist()
    rest = np.setdiff1d(pool, chosen)
    chosen += rng.choice(rest, size - len(chosen), replace=False).tolist()
    return np.sort(np.asarray(chosen, dtype=np.int64))


def limited_split(split: Split, values: np.ndarray, size: int,
                  seed: int = 0, valid_size: int = 0,
                  bins: int = 10) -> Split:
    """:obj:`split` with its training part replaced by a
    :func:`stratified_subset` of :obj:`size` molecules (stratified on
    :obj:`values`, e.g. the HOMO-LUMO gap of each molecule) and, when
    :obj:`valid_size` is positive, its validation part by a random subset of
    that size."""
    out = dict(split)
    out['train'] = stratified_subset(split['train'], values[split['train']],
                                     values[split['test']], size, bins,
                                     seed)
    if 0 < valid_size < len(split['valid']):
        rng = np.random.default_rng(seed)
        out['valid'] = np.sort(rng.choice(split['valid'], valid_size,
                                          replace=False))
    return out
