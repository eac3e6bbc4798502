import numpy as np
import pytest
from conftest import read_moses

from pyg_unimol2.data.splits import (load_split, make_split, murcko_scaffold,
                                     random_split, save_split,
                                     scaffold_similarity_split,
                                     scaffold_split, scaffold_test_similarity)


@pytest.fixture(scope='module')
def smiles():
    return read_moses(2000)


def test_murcko_scaffold_of_known_molecules():
    # Aspirin: the scaffold is benzene; ethanol is acyclic.
    assert murcko_scaffold('CC(=O)Oc1ccccc1C(=O)O') == 'c1ccccc1'
    assert murcko_scaffold('CCO') == ''
    assert murcko_scaffold('not a smiles') == ''


def test_random_split_partitions_and_is_seeded():
    split = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    assert [len(split[k]) for k in ('train', 'valid', 'test')] == [800, 100, 100]
    everything = np.concatenate(list(split.values()))
    assert np.array_equal(np.sort(everything), np.arange(1000))
    again = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    other = random_split(1000, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split['test'], other['test'])


def test_fractions_are_validated():
    with pytest.raises(ValueError, match='sum to 1'):
        random_split(10, (0.8, 0.3, 0.1))


def test_scaffold_split_keeps_scaffolds_apart(smiles):
    split = scaffold_split(smiles, seed=0)
    scaffolds = {k: {murcko_scaffold(smiles[i]) for i in v}
                 for k, v in split.items()}
    assert not scaffolds['train'] & scaffolds['test']
    assert not scaffolds['train'] & scaffolds['valid']
    assert not scaffolds['valid'] & scaffolds['test']
    sizes = {k: len(v) for k, v in split.items()}
    assert sum(sizes.values()) == len(smiles)
    assert abs(sizes['test'] - 200) <= 5 and abs(sizes['valid'] - 200) <= 5
    again = scaffold_split(smiles, seed=0)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split['test'], scaffold_split(smiles, seed=1)['test'])


def test_split_roundtrip(tmp_path):
    split = random_split(50, seed=0)
    save_split(split, tmp_path / 'sub' / 'split.npz')
    loaded = load_split(tmp_path / 'sub' / 'split.npz')
    assert all(np.array_equal(split[k], loaded[k]) for k in split)


def test_scaffold_similarity_split_partitions_and_is_seeded(smiles):
    split = scaffold_similarity_split(smiles, seed=0)
    everything = np.concatenate(list(split.values()))
    assert np.array_equal(np.sort(everything), np.arange(len(smiles)))
    scaffolds = {k: {murcko_scaffold(smiles[i]) for i in v}
                 for k, v in split.items()}
    assert not scaffolds['train'] & scaffolds['test']
    assert not scaffolds['valid'] & scaffolds['test']
    assert abs(len(split['test']) - 200) <= 5
    again = scaffold_similarity_split(smiles, seed=0)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    other = scaffold_similarity_split(smiles, seed=1)
    assert not np.array_equal(split['test'], other['test'])


def test_similarity_split_test_set_is_more_dissimilar(smiles):
    # Mean max Tanimoto of test scaffolds to training scaffolds, 3 seeds.
    def sim(make):
        return np.mean([scaffold_test_similarity(smiles, make(smiles, seed=s))
                        for s in range(3)])
    random_sim = np.mean([scaffold_test_similarity(
        smiles, random_split(len(smiles), seed=s)) for s in range(3)])
    scaffold_sim = sim(scaffold_split)
    similarity_sim = sim(scaffold_similarity_split)
    assert similarity_sim < scaffold_sim - 0.03 < random_sim


def test_make_split_dispatches(smiles):
    assert np.array_equal(make_split('scaffold', smiles, seed=2)['test'],
                          scaffold_split(smiles, seed=2)['test'])
    with pytest.raises(ValueError, match='unknown split'):
        make_split('cluster', smiles)
