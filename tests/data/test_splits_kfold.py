import numpy as np
import pytest
from conftest import read_moses

from pyg_unimol2.data.splits import column_split, kfold_split, murcko_scaffold


@pytest.fixture(scope='module')
def smiles():
    return read_moses(500)


def assert_partition(split, n):
    everything = np.concatenate([split[k] for k in ('train', 'valid', 'test')])
    assert np.array_equal(np.sort(everything), np.arange(n))
    assert all(np.array_equal(v, np.sort(v)) and v.dtype == np.int64
               for v in split.values())


@pytest.mark.parametrize('kind', ['random', 'scaffold'])
def test_folds_partition_and_test_every_item_once(smiles, kind):
    k, n = 5, len(smiles)
    splits = [kfold_split(smiles, k=k, fold=f, kind=kind, seed=1)
              for f in range(k)]
    for split in splits:
        assert_partition(split, n)
        rest = len(split['train']) + len(split['valid'])
        assert abs(len(split['valid']) - 0.1 * rest) <= (1 if kind == 'random'
                                                         else 5)
    tests = np.concatenate([s['test'] for s in splits])
    assert np.array_equal(np.sort(tests), np.arange(n))
    sizes = [len(s['test']) for s in splits]
    assert max(sizes) - min(sizes) <= (1 if kind == 'random' else 3)


def test_scaffold_folds_keep_scaffold_groups_whole(smiles):
    for fold in range(5):
        split = kfold_split(smiles, k=5, fold=fold, kind='scaffold', seed=0)
        scaffolds = {k: {murcko_scaffold(smiles[i]) for i in v}
                     for k, v in split.items()}
        assert not scaffolds['test'] & scaffolds['train']
        assert not scaffolds['test'] & scaffolds['valid']
        assert not scaffolds['valid'] & scaffolds['train']


@pytest.mark.parametrize('kind', ['random', 'scaffold'])
def test_kfold_is_seeded(smiles, kind):
    split = kfold_split(smiles, k=5, fold=2, kind=kind, seed=3)
    again = kfold_split(smiles, k=5, fold=2, kind=kind, seed=3)
    other = kfold_split(smiles, k=5, fold=2, kind=kind, seed=4)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split['test'], other['test'])


def test_kfold_arguments_are_validated(smiles):
    with pytest.raises(ValueError, match='k >= 2'):
        kfold_split(smiles, k=1)
    with pytest.raises(ValueError, match=r'fold must be in 0\.\.4'):
        kfold_split(smiles, k=5, fold=5)
    with pytest.raises(ValueError, match='fold must be'):
        kfold_split(smiles, k=5, fold=-1)
    with pytest.raises(ValueError, match='unknown k-fold kind'):
        kfold_split(smiles, kind='cluster')
    with pytest.raises(ValueError, match='valid_fraction'):
        kfold_split(smiles, valid_fraction=1.0)
    with pytest.raises(ValueError, match='at least 5 scaffold groups'):
        kfold_split(['c1ccccc1C', 'c1ccccc1O', 'CCO'], k=5, kind='scaffold')


def test_column_split_maps_values():
    values = ['train', ' Test', 'VAL', 'valid', 'dev ', 'validation', 'TRAIN']
    split = column_split(values)
    assert split['train'].tolist() == [0, 6]
    assert split['valid'].tolist() == [2, 3, 4, 5]
    assert split['test'].tolist() == [1]
    assert_partition(split, len(values))


def test_column_split_carves_valid_from_train_when_absent():
    values = ['train'] * 90 + ['test'] * 10
    split = column_split(values, seed=0, valid_fraction=0.2)
    assert_partition(split, 100)
    assert split['test'].tolist() == list(range(90, 100))
    assert len(split['valid']) == 18 and split['valid'].max() < 90
    again = column_split(values, seed=0, valid_fraction=0.2)
    other = column_split(values, seed=1, valid_fraction=0.2)
    assert np.array_equal(split['valid'], again['valid'])
    assert not np.array_equal(split['valid'], other['valid'])
    assert len(column_split(['train', 'test'])['train']) == 1


def test_column_split_errors():
    with pytest.raises(ValueError, match=r"'holdout' in row 2.*accepted"):
        column_split(['train', 'test', 'holdout', 'holdout'])
    with pytest.raises(ValueError, match="no row is marked 'train'"):
        column_split(['test', 'valid'])
    with pytest.raises(ValueError, match="no row is marked 'test'"):
        column_split(['train', 'valid'])
