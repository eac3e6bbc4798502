import numpy as np

from pyg_unimol2.bench.splits import limited_split, stratified_subset
from pyg_unimol2.data.splits import random_split


def test_stratified_subset_follows_the_test_distribution():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 900), rng.normal(5, 1, 100)])
    split = random_split(1000, seed=0)
    sub = stratified_subset(split['train'], values[split['train']],
                            values[split['test']], 100, bins=10, seed=1)
    assert len(sub) == len(set(sub.tolist())) == 100
    assert set(sub.tolist()) <= set(split['train'].tolist())
    edges = np.quantile(values[split['test']], np.linspace(0, 1, 11))[1:-1]
    counts = np.bincount(np.searchsorted(edges, values[sub], side='right'),
                         minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11
    again = stratified_subset(split['train'], values[split['train']],
                              values[split['test']], 100, bins=10, seed=1)
    assert np.array_equal(sub, again)


def test_limited_split_keeps_the_test_set():
    values = np.linspace(0, 1, 500)
    split = random_split(500, seed=0)
    limited = limited_split(split, values, 50, seed=0, valid_size=20)
    assert len(limited['train']) == 50 and len(limited['valid']) == 20
    assert np.array_equal(limited['test'], split['test'])
    assert set(limited['valid'].tolist()) <= set(split['valid'].tolist())
