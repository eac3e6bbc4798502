import pickle

import numpy as np
import pytest
import torch
from conftest import read_moses
from rdkit import Chem
from torch.utils.data import DistributedSampler
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from pyg_unimol2.data import from_smiles, to_dense
from pyg_unimol2.data.samplers import (DynamicBatchSampler,
                                       ScaffoldTemperatureSampler)
from pyg_unimol2.data.store import build_store
from pyg_unimol2.datasets.hdf5 import HDF5MoleculeDataset

NUM_UNIQUE = 120
#: (dtype, shape as a function of n atoms and E directed bonds)
CONTRACT = {
    'z': (torch.int64, lambda n, e: (n, )),
    'x': (torch.int64, lambda n, e: (n, 9)),
    'atom_feat': (torch.int64, lambda n, e: (n, 8)),
    'degree': (torch.int64, lambda n, e: (n, )),
    'edge_index': (torch.int64, lambda n, e: (2, e)),
    'edge_attr': (torch.int64, lambda n, e: (e, 3)),
    'pos': (torch.float32, lambda n, e: (n, 3)),
    'spd': (torch.int16, lambda n, e: (n * n, )),
    'pair_feat': (torch.uint8, lambda n, e: (n * n, 3)),
    'pair_type': (torch.uint8, lambda n, e: (n * n, 2)),
    'has_graph': (torch.bool, lambda n, e: (1, )),
}


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """120 MOSES molecules, then 12 of them again, written differently
    (random SMILES of the same molecule)."""
    smiles = read_moses(NUM_UNIQUE)
    again = [Chem.MolToSmiles(Chem.MolFromSmiles(s), doRandom=True)
             for s in smiles[::10]]
    assert not set(again) & set(smiles)
    folder = tmp_path_factory.mktemp('hdf5')
    (folder / 'in.smi').write_text('\n'.join(smiles + again) + '\n')
    out = folder / 'store'
    build_store(folder / 'in.smi', out, workers=2, shard_size=25,
                progress=False, verbose=False)
    return out, smiles + again


def test_items_follow_the_data_contract(store):
    out, smiles = store
    dataset = HDF5MoleculeDataset(out)
    assert len(dataset) == len(smiles) == 132
    assert str(dataset) == 'HDF5MoleculeDataset(132)'
    assert dataset.manifest['counts']['molecules'] == 132
    for i in (0, 31, 131):
        data = dataset[i]
        assert data.smiles == smiles[i] and data.name == ''
        n, e = data.num_nodes, data.edge_index.size(1)
        for key, (dtype, shape) in CONTRACT.items():
            assert data[key].dtype == dtype, key
            assert tuple(data[key].shape) == shape(n, e), key
    expected = from_smiles(smiles[31])
    data = dataset[31]
    for key in CONTRACT:
        assert torch.equal(data[key], expected[key]), key
    assert np.array_equal(dataset.num_atoms,
                          [dataset[i].num_nodes for i in range(132)])


def test_dataloader_batches_densify(store):
    out, smiles = store
    dataset = HDF5MoleculeDataset(out)
    batch = next(iter(DataLoader(dataset, batch_size=6)))
    dense = to_dense(batch)
    reference = to_dense(Batch.from_data_list(
        [from_smiles(s) for s in smiles[:6]]))
    for name in ('token', 'atom_feat', 'degree', 'pos', 'spd', 'pair_feat',
                 'pair_type', 'atom_mask'):
        assert torch.equal(getattr(dense, name), getattr(reference, name))


def _loader_keys(loader):
    return [(tuple(b.smiles), b.pos.sum().item()) for b in loader]


def test_dataloader_workers_and_pickle(store):
    out, _ = store
    dataset = HDF5MoleculeDataset(out)
    dataset[0]  # opens a shard in the parent before the workers fork
    single = _loader_keys(DataLoader(dataset, batch_size=10))
    multi = _loader_keys(DataLoader(dataset, batch_size=10, num_workers=2))
    assert single == multi
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone[7].smiles == dataset[7].smiles


@pytest.mark.slow
def test_dataloader_spawn_workers(store):
    out, _ = store
    dataset = HDF5MoleculeDataset(out, split='train', valid_fraction=0.2)
    single = _loader_keys(DataLoader(dataset, batch_size=16))
    spawned = _loader_keys(DataLoader(dataset, batch_size=16, num_workers=2,
                                      multiprocessing_context='spawn'))
    assert single == spawned


def test_distributed_sampler(store):
    out, _ = store
    dataset = HDF5MoleculeDataset(out)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank,
                                     shuffle=True, seed=0)
        for batch in DataLoader(dataset, batch_size=8, sampler=sampler):
            seen += batch.smiles
    assert len(seen) == 132 and set(seen) == {d.smiles for d in dataset}


def test_valid_split_held_out_by_molecule(store):
    out, smiles = store
    full = HDF5MoleculeDataset(out)
    train = HDF5MoleculeDataset(out, split='train', valid_fraction=0.25)
    valid = HDF5MoleculeDataset(out, split='valid', valid_fraction=0.25)
    assert len(train) + len(valid) == 132
    assert 0.1 * 132 < len(valid) < 0.4 * 132
    t, v = train.store_indices(), valid.store_indices()
    assert not set(t) & set(v) and sorted(np.r_[t, v]) == list(range(132))
    assert [train.store_index(i) for i in range(len(train))] == t.tolist()
    assert [train[i].smiles for i in range(len(train))] == \
        [full[i].smiles for i in t]
    # Both spellings of a molecule land in the same split.
    canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles]
    in_valid = {canonical[i] for i in v}
    in_train = {canonical[i] for i in t}
    assert not in_valid & in_train
    assert sum(canonical[i] in in_valid for i in range(NUM_UNIQUE, 132)) == \
        sum(canonical[i] in in_valid for i in range(0, NUM_UNIQUE, 10))
    # Deterministic; another seed gives another split.
    assert np.array_equal(v, HDF5MoleculeDataset(
        out, split='valid', valid_fraction=0.25).store_indices())
    assert not np.array_equal(v, HDF5MoleculeDataset(
        out, split='valid', valid_fraction=0.25, split_seed=1).store_indices())
    assert len(HDF5MoleculeDataset(out, split='valid', valid_fraction=0)) == 0
    with pytest.raises(IndexError):
        train.get(len(train))
    with pytest.raises(ValueError):
        HDF5MoleculeDataset(out, split='test')


def test_subsets_and_sampler_arrays(store):
    out, _ = store
    train = HDF5MoleculeDataset(out, split='train', valid_fraction=0.25)
    subset = train[[5, 2, 9]]
    assert len(subset) == 3
    assert subset.store_indices().tolist() == [
        train.store_index(i) for i in (5, 2, 9)]
    assert subset.num_atoms.tolist() == [subset[i].num_nodes
                                         for i in range(3)]
    assert subset[1].smiles == train[2].smiles
    full = HDF5MoleculeDataset(out)
    ids = full.scaffold_id
    assert ids.shape == (132, ) and ids.max() + 1 == \
        full.manifest['counts']['scaffolds']


def test_dynamic_batches_with_scaffold_sampling(store):
    out, _ = store
    dataset = HDF5MoleculeDataset(out, split='train', valid_fraction=0.1)
    inner = ScaffoldTemperatureSampler(dataset.scaffold_id, num_replicas=1,
                                       rank=0, seed=0)
    batches = DynamicBatchSampler(dataset.num_atoms, max_pairs=6000,
                                  sampler=inner, num_replicas=2, rank=0)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=2)
    count = 0
    for batch in loader:
        dense = to_dense(batch)
        B, L = dense.token.shape
        assert B * L * L <= 6000 or B == 1
        count += B
    assert count == sum(len(b) for b in batches)


def _rss_anon_kb() -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('RssAnon:'):
                return int(line.split()[1])
    pytest.skip('no /proc/self/status')


def test_memory_stays_flat(store):
    out, _ = store
    dataset = HDF5MoleculeDataset(out)
    order = np.random.default_rng(0).integers(0, len(dataset), 20_000)
    for i in order[:2_000]:
        dataset[int(i)]
    before = _rss_anon_kb()
    for i in order[2_000:]:
        dataset[int(i)]
    assert _rss_anon_kb() - before < 4096
