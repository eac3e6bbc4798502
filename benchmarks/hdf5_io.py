"""Random-access read throughput and memory of a sharded HDF5 store.

Measures, on a store built with ``unimol2 build-hdf5``:

1. ``read_raw``: the stored arrays of random molecules (I/O and checksum
   verification), and the CRC-32 share of it: the same checksums computed
   alone over the same molecules (the price of verification);
2. ``dataset[i]``: random molecules as PyG ``Data`` (I/O + decoding), in one
   process, with the process memory sampled along the way;
3. a ``DataLoader`` with random sampling and ``--batch-size``, with 0 and
   with ``--workers`` worker processes, for three collate functions: none
   (reading only), PyG's ``Batch`` and ``Batch`` + ``to_dense`` (padded
   tensors). A PyG ``Batch`` holds ~40 tensors (its slice/increment
   dictionaries included), each sent separately from a worker, which costs
   the main process about as much as reading the molecules itself.

    python benchmarks/hdf5_io.py STORE [--reads 200000] [--workers 2]

Prints a table and writes ``benchmarks/results/hdf5_io.json``.
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import RandomSampler
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from pyg_unimol2.data.dense import to_dense
from pyg_unimol2.data.store.format import crc32
from pyg_unimol2.datasets.hdf5 import HDF5MoleculeDataset

HERE = Path(__file__).resolve().parent


def memory_kb(pid='self'):
    """``VmRSS``, ``RssAnon`` and ``RssFile`` of a process, in kB."""
    out = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            key = line.split(':')[0]
            if key in ('VmRSS', 'RssAnon', 'RssFile', 'VmHWM'):
                out[key] = int(line.split()[1])
    return out


def children_memory_kb():
    pids = []
    for task in Path('/proc/self/task').iterdir():
        try:
            pids += (task / 'children').read_text().split()
        except OSError:
            pass
    return {pid: memory_kb(pid) for pid in pids}


def load() -> float:
    return os.getloadavg()[0]


def bench_single(dataset, order, samples=10):
    """dataset[i] over ``order``; memory sampled ``samples`` times."""
    memory = [dict(reads=0, **memory_kb())]
    chunk = max(len(order) // samples, 1)
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(0, len(order), chunk):
        for i in order[k:k + chunk]:
            dataset[i]
        memory.append(dict(reads=min(k + chunk, len(order)), **memory_kb()))
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    return len(order) / seconds, len(order) / cpu, memory


def count_atoms(items):
    """Collate to a number: isolates reading + decoding in the workers."""
    return sum(d.num_nodes for d in items), len(items)


def dense_collate(items):
    """PyG collation then padding (``to_dense``) in the worker: what a
    pretraining loop consumes, sent as 8 tensors."""
    return to_dense(Batch.from_data_list(items))


COLLATES = {'none': count_atoms, 'pyg': None, 'dense': dense_collate}


def bench_loader(dataset, reads, batch_size, workers, seed, collate):
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=True, num_samples=reads,
                            generator=generator)
    if COLLATES[collate] is None:  # PyG's loader and Collater
        loader_cls, kwargs = DataLoader, {}
    else:  # PyG's DataLoader would replace collate_fn
        loader_cls = torch.utils.data.DataLoader
        kwargs = dict(collate_fn=COLLATES[collate])
    loader = loader_cls(dataset, batch_size=batch_size, sampler=sampler,
                        num_workers=workers, persistent_workers=False,
                        prefetch_factor=4 if workers else None, **kwargs)
    count, worker_memory = 0, {}
    start = time.perf_counter()
    cpu = time.process_time()
    for b, batch in enumerate(loader):
        if collate == 'none':
            count += batch[1]
        elif collate == 'dense':
            count += batch.token.size(0)
        else:
            count += batch.num_graphs
        if workers and b == len(loader) // 2:
            worker_memory = children_memory_kb()
    seconds = time.perf_counter() - start
    return dict(mol_per_s=count / seconds, seconds=seconds,
                main_cpu_seconds=time.process_time() - cpu,
                worker_memory_kb=worker_memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('store')
    parser.add_argument('--reads', type=int, default=200_000)
    parser.add_argument('--workers', type=int, default=2,
                        help='DataLoader workers; -1 skips the DataLoader')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=str(HERE / 'results' /
                                             'hdf5_io.json'))
    args = parser.parse_args()
    torch.set_num_threads(1)

    dataset = HDF5MoleculeDataset(args.store)
    manifest = dataset.manifest
    store_bytes = sum(p.stat().st_size for p in Path(args.store).iterdir())
    n = len(dataset)
    order = np.random.default_rng(args.seed).integers(0, n, args.reads)
    order = order.tolist()
    print(f'store {args.store}: {n} molecules, {manifest["counts"]["shards"]}'
          f' shards, {store_bytes / 2**20:.1f} MiB '
          f'({store_bytes / max(n, 1):.0f} B/molecule); load average '
          f'{load():.2f} on {os.cpu_count()} CPUs')
    results = dict(store=str(args.store), molecules=n,
                   shards=manifest['counts']['shards'],
                   store_bytes=store_bytes, reads=args.reads,
                   cpus=os.cpu_count(), machine=platform.machine(),
                   python=platform.python_version(),
                   load_average_start=load())

    # Warm the page cache (the store fits in memory) and the code paths.
    for i in range(min(n, 5000)):
        dataset.reader.read_raw(i)

    reader = dataset.reader
    start = time.perf_counter()
    for i in order:
        reader.read_raw(i)
    raw_seconds = time.perf_counter() - start
    results['read_raw_mol_per_s'] = args.reads / raw_seconds

    # The price of verification: the CRC-32s read_raw computes, alone.
    raws = [reader.read_raw(i) for i in order[:20000]]
    start = time.perf_counter()
    for raw in raws:
        crc32(raw['graph'], raw['pos'], raw['spd'], raw['smiles'].encode(),
               raw['name'].encode())
    crc_us = (time.perf_counter() - start) / len(raws) * 1e6
    del raws
    results['checksum_us_per_mol'] = crc_us

    # Wall-clock rates depend on what else runs on the machine; the rate
    # per CPU-second of the reading process is reported beside them.
    rate, cpu_rate, memory = bench_single(dataset, order)
    results['single_process'] = dict(mol_per_s=rate,
                                      mol_per_cpu_s=cpu_rate,
                                      memory_kb=memory)
    rate2, cpu_rate2, memory2 = bench_single(dataset, order)  # second pass
    results['single_process_second_pass'] = dict(
        mol_per_s=rate2, mol_per_cpu_s=cpu_rate2, memory_kb=memory2)

    loaders = {}
    for collate in COLLATES if args.workers >= 0 else ():
        for workers in sorted({0, args.workers}):
            loaders[f'{collate}, {workers} workers'] = bench_loader(
                dataset, args.reads, args.batch_size, workers, args.seed,
                collate)
    results['dataloader'] = dict(
        batch_size=args.batch_size, collate=dict(
            none='sum of atom counts (reading + decoding only)',
            pyg='torch_geometric Batch (default Collater)',
            dense='Batch.from_data_list + to_dense in the worker'),
        runs=loaders)
    results['load_average_end'] = load()

    first, last = memory[1], memory2[-1]
    print(f'{"measurement":<44} {"mol/s":>10} {"mol/CPU-s":>10}')
    print('-' * 66)
    print(f'{"read_raw (stored arrays, verified), 1 process":<44} '
          f'{results["read_raw_mol_per_s"]:>10.0f}')
    print(f'{"dataset[i] -> Data, 1 process":<44} {rate:>10.0f} '
          f'{cpu_rate:>10.0f}')
    print(f'{"dataset[i] -> Data, 1 process, 2nd pass":<44} {rate2:>10.0f} '
          f'{cpu_rate2:>10.0f}')
    for label, r in loaders.items():
        label = f'DataLoader B={args.batch_size}, collate {label}'
        print(f'{label:<44} {r["mol_per_s"]:>10.0f}')
    print(f'memory of the reading process after {first["reads"]} and after '
          f'{2 * args.reads} reads: RSS {first["VmRSS"] / 1024:.1f} -> '
          f'{last["VmRSS"] / 1024:.1f} MiB, anonymous '
          f'{first["RssAnon"] / 1024:.1f} -> {last["RssAnon"] / 1024:.1f} '
          f'MiB, file-backed {first["RssFile"] / 1024:.1f} -> '
          f'{last["RssFile"] / 1024:.1f} MiB')
    for label, r in loaders.items():
        for pid, mem in r['worker_memory_kb'].items():
            print(f'  {label}, worker {pid}: RSS {mem["VmRSS"] / 1024:.1f} '
                  f'MiB (anonymous {mem["RssAnon"] / 1024:.1f} MiB)')
    share = crc_us * rate / 1e6
    results['checksum_share_of_dataset_read'] = share
    print(f'checksum verification: {crc_us:.2f} us per molecule, '
          f'{100 * share:.1f}% of a dataset[i] read (every read is verified)')
    print(f'load average {results["load_average_start"]:.2f} -> '
          f'{results["load_average_end"]:.2f}')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
