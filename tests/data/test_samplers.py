from collections import Counter

import numpy as np
import pytest
from conftest import read_moses
from rdkit import Chem

from pyg_unimol2.data.samplers import (DynamicBatchSampler,
                                       ScaffoldTemperatureSampler,
                                       padding_fraction,
                                       scaffold_temperature_probabilities)
from pyg_unimol2.data.splits import murcko_scaffold


@pytest.fixture(scope='module')
def moses():
    """Atom counts and scaffold ids of 2,000 real MOSES molecules."""
    smiles = read_moses(2000)
    num_atoms = np.array([Chem.MolFromSmiles(s).GetNumAtoms()
                          for s in smiles])
    ids = {}
    scaffold_ids = np.array([ids.setdefault(murcko_scaffold(s), len(ids))
                             for s in smiles])
    return num_atoms, scaffold_ids


def test_temperature_probabilities_formula():
    counts = np.array([1, 1, 2, 96])
    p = scaffold_temperature_probabilities(counts, tau=0.005)
    f = counts / counts.sum()
    expected = np.exp(f / 0.005) / np.exp(f / 0.005).sum()
    assert np.allclose(p, expected) and np.isclose(p.sum(), 1)
    # Large tau: uniform over scaffolds; small tau: the biggest one.
    assert np.allclose(scaffold_temperature_probabilities(counts, 1e6), 0.25)
    assert scaffold_temperature_probabilities(counts, 1e-4)[3] > 0.999
    # Large corpus, tiny frequencies: close to uniform over scaffolds.
    big = np.full(100_000, 10)
    big[0] = 10_000
    p = scaffold_temperature_probabilities(big)
    assert p[0] / p[1] == pytest.approx(np.exp((10_000 - 10) / big.sum()
                                               / 0.005))
    with pytest.raises(ValueError):
        scaffold_temperature_probabilities(counts, tau=0)


def test_scaffold_sampler_empirical_distribution():
    ids = np.array([0] * 50 + [1] * 5 + [2] * 5 + [3] * 40)
    sampler = ScaffoldTemperatureSampler(ids, tau=0.2, num_samples=200_000,
                                         num_replicas=1, rank=0, seed=3)
    draws = np.fromiter(iter(sampler), np.int64)
    assert len(sampler) == draws.shape[0] == 200_000
    freq = np.bincount(ids[draws], minlength=4) / draws.shape[0]
    assert np.allclose(freq, sampler.scaffold_prob, atol=0.01)
    # Uniform within a scaffold.
    within = np.bincount(draws[ids[draws] == 1], minlength=100)[50:55]
    assert within.min() > 0.8 * within.mean()
    assert np.isclose(sampler.molecule_prob.sum(), 1)


def test_scaffold_sampler_deterministic_epochs_and_ranks(moses):
    _, scaffold_ids = moses
    make = lambda **kw: ScaffoldTemperatureSampler(  # noqa: E731
        scaffold_ids, num_replicas=kw.pop('R', 1), rank=kw.pop('r', 0),
        seed=kw.pop('seed', 0), **kw)
    a, b = make(), make()
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(a) != list(make(seed=1))
    # Ranks share one global order: disjoint, interleaved draws.
    full = make(R=3, r=0, num_samples=1001).global_order()
    other = make(R=3, r=2, num_samples=1001).global_order()
    assert np.array_equal(full, other)
    assert full.shape == (1002, )
    parts = [list(make(R=3, r=r, num_samples=1001)) for r in range(3)]
    assert [len(p) for p in parts] == [334] * 3
    assert sorted(sum(parts, [])) == sorted(full.tolist())
    for r, part in enumerate(parts):
        assert part == full[r::3].tolist()
    dropped = make(R=3, r=0, num_samples=1001, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 333


def test_scaffold_sampler_without_replacement(moses):
    _, scaffold_ids = moses
    n = scaffold_ids.shape[0]
    parts = [list(ScaffoldTemperatureSampler(
        scaffold_ids, replacement=False, num_replicas=2, rank=r, seed=5))
        for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(n))  # a permutation
    # Big scaffolds come early: the first draws favour them.
    counts = np.bincount(scaffold_ids)
    first = np.array(parts[0][:100] + parts[1][:100])
    assert counts[scaffold_ids[first]].mean() > counts[scaffold_ids].mean()


def test_dynamic_batches_cover_everything_within_budget(moses):
    num_atoms, _ = moses
    sampler = DynamicBatchSampler(num_atoms, max_pairs=20_000,
                                  max_tokens=1_000, num_replicas=1, rank=0,
                                  bucket_size=512)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(num_atoms.shape[0]))
    for b in batches:
        L = num_atoms[b].max()
        assert len(b) * L * L <= 20_000 and len(b) * L <= 1_000
    pair_pad, atom_pad = padding_fraction(batches, num_atoms)
    assert pair_pad < 0.05 and atom_pad < 0.03
    # Random fixed-size batches pad far more.
    perm = np.random.default_rng(0).permutation(num_atoms.shape[0])
    fixed = [perm[i:i + 32] for i in range(0, perm.shape[0], 32)]
    assert padding_fraction(fixed, num_atoms)[0] > 0.2


def test_dynamic_batches_oversized_and_batch_size_cap():
    num_atoms = np.array([5, 5, 5, 100, 5, 5])
    sampler = DynamicBatchSampler(num_atoms, max_pairs=1_000,
                                  max_batch_size=2, shuffle=False,
                                  num_replicas=1, rank=0)
    batches = list(sampler)
    assert [3] in batches  # over budget: alone
    assert max(len(b) for b in batches) == 2
    assert sorted(i for b in batches for i in b) == list(range(6))
    with pytest.raises(ValueError):
        DynamicBatchSampler(num_atoms)


@pytest.mark.parametrize('drop_last', [False, True])
def test_dynamic_batches_distributed(moses, drop_last):
    num_atoms, _ = moses
    kw = dict(max_pairs=15_000, seed=7, drop_last=drop_last, bucket_size=256)
    single = DynamicBatchSampler(num_atoms, num_replicas=1, rank=0, **kw)
    ranks = [DynamicBatchSampler(num_atoms, num_replicas=3, rank=r, **kw)
             for r in range(3)]
    per_rank = [list(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1  # same number of steps
    assert per_rank == [list(s) for s in ranks]  # deterministic
    glob = single.global_batches()
    seen = [i for b in per_rank for batch in b for i in batch]
    if drop_last:  # disjoint, every batch of full rounds
        assert len(seen) == len(set(seen))
        assert len(per_rank[0]) == len(glob) // 3
    else:  # everything, a few batches repeated to even out
        assert set(seen) == set(range(num_atoms.shape[0]))
        assert len(per_rank[0]) == -(-len(glob) // 3)
    for r in range(3):
        assert per_rank[r][0] == glob[r]
    for s in ranks:
        s.set_epoch(1)
    assert [list(s) for s in ranks] != per_rank


def test_dynamic_batches_over_scaffold_sampler(moses):
    num_atoms, scaffold_ids = moses
    inner = ScaffoldTemperatureSampler(scaffold_ids, num_replicas=1, rank=0,
                                       seed=1)
    outer = DynamicBatchSampler(num_atoms, max_pairs=20_000, sampler=inner,
                                num_replicas=2, rank=1, seed=1)
    drawn = Counter(inner.global_order().tolist())
    got = Counter(i for b in outer for i in b)
    assert not got - drawn  # only drawn molecules, at most as often
    outer.set_epoch(4)
    assert inner.epoch == 4
    with pytest.raises(ValueError):
        DynamicBatchSampler(num_atoms, max_pairs=10, sampler=(
            ScaffoldTemperatureSampler(scaffold_ids, num_replicas=2,
                                       rank=0)))


def test_dataset_probabilities_follow_n_to_the_one_over_t():
    from pyg_unimol2.data.samplers import dataset_probabilities
    sizes = [100, 400, 1600]
    np.testing.assert_allclose(dataset_probabilities(sizes, 'proportional'),
                               np.array(sizes) / 2100)
    np.testing.assert_allclose(dataset_probabilities(sizes, 'uniform'),
                               [1 / 3] * 3)
    np.testing.assert_allclose(dataset_probabilities(sizes, 'temperature',
                                                     2.0), [10 / 70, 20 / 70,
                                                            40 / 70])
    with pytest.raises(ValueError, match='unknown dataset sampling'):
        dataset_probabilities(sizes, 'sqrt')
    with pytest.raises(ValueError, match='every dataset needs molecules'):
        dataset_probabilities([10, 0])


def _mixer(mode, seed=0):
    from pyg_unimol2.data.samplers import DatasetMixSampler
    sizes = [40, 160, 640]
    samplers = [DynamicBatchSampler(np.full(n, 10), max_batch_size=8,
                                    bucket_size=8, num_replicas=1, rank=0,
                                    seed=d) for d, n in enumerate(sizes)]
    return DatasetMixSampler(samplers, sizes, mode, 2.0, seed), sizes


def test_dataset_mix_proportional_visits_every_molecule_once():
    mixer, sizes = _mixer('proportional')
    plan = mixer.plan()
    assert len(plan) == len(mixer) == sum(n // 8 for n in sizes)
    for d, n in enumerate(sizes):
        seen = sorted(i for dd, b in plan if dd == d for i in b)
        assert seen == list(range(n))


def test_dataset_mix_temperature_frequencies_and_replay():
    mixer, sizes = _mixer('temperature')
    counts = np.zeros(3)
    for epoch in range(20):
        mixer.set_epoch(epoch)
        for d, batch in mixer.plan():
            counts[d] += 1
            assert max(batch) < sizes[d]
    expected = np.sqrt(sizes) / np.sqrt(sizes).sum()
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.02)
    # The small dataset runs out and continues with its next own epoch.
    mixer.set_epoch(3)
    first = mixer.plan()
    again, _ = _mixer('temperature')
    again.set_epoch(3)
    assert again.plan() == first  # a function of (seed, epoch)
    again.set_epoch(4)
    assert again.plan() != first
