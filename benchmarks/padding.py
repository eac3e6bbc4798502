"""Padding of atom-pair tensors: dynamic (atom-budget) vs fixed-size batches.

A batch padded to its largest molecule (``to_dense``) holds ``B * L**2``
pair elements, of which ``sum n_i**2`` are real. This script reports the
padded fraction for random fixed-size batches and for
:class:`~pyg_unimol2.data.samplers.DynamicBatchSampler` at the same
worst-case memory (``max_pairs = B * n_max**2``), on real MOSES molecules
(heavy-atom counts from RDKit), with and without scaffold temperature
sampling as the base order.

    python benchmarks/padding.py [--num-molecules 100000]

Prints a table and writes ``benchmarks/results/padding.json``.
"""
import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from pyg_unimol2.bench.shared import moses_test
from pyg_unimol2.data.samplers import (DynamicBatchSampler,
                                       ScaffoldTemperatureSampler,
                                       padding_fraction)
from pyg_unimol2.data.splits import murcko_scaffold

HERE = Path(__file__).resolve().parent
MOSES = moses_test()


def load(path: Path, count: int, scaffolds: bool):
    smiles = []
    with gzip.open(path, 'rt') as f:
        next(f)
        for line in f:
            smiles.append(line.strip())
            if len(smiles) == count:
                break
    with rdBase.BlockLogs():
        num_atoms = np.array([Chem.MolFromSmiles(s).GetNumAtoms()
                              for s in smiles])
    ids = None
    if scaffolds:
        table = {}
        ids = np.array([table.setdefault(murcko_scaffold(s), len(table))
                        for s in smiles])
    return num_atoms, ids


def row(method, budget, batches, num_atoms, seconds):
    pair_pad, atom_pad = padding_fraction(batches, num_atoms)
    sizes = np.array([len(b) for b in batches])
    return dict(method=method, budget=budget, batches=len(batches),
                mean_batch=float(sizes.mean()), max_batch=int(sizes.max()),
                pair_padding=pair_pad, atom_padding=atom_pad,
                sampler_seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--smiles', default=str(MOSES))
    parser.add_argument('--num-molecules', type=int, default=100_000)
    parser.add_argument('--batch-sizes', default='16,32,64,128')
    parser.add_argument('--bucket-sizes', default='256,1024,4096')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=str(HERE / 'results' /
                                             'padding.json'))
    args = parser.parse_args()

    t0 = time.perf_counter()
    num_atoms, scaffold_ids = load(Path(args.smiles), args.num_molecules,
                                   scaffolds=True)
    load_s = time.perf_counter() - t0
    n_max = int(num_atoms.max())
    print(f'{num_atoms.shape[0]} MOSES molecules, heavy atoms: mean '
          f'{num_atoms.mean():.1f}, min {num_atoms.min()}, max {n_max} '
          f'(loaded in {load_s:.1f} s)')

    rows = []
    rng = np.random.default_rng(args.seed)
    for B in map(int, args.batch_sizes.split(',')):
        t = time.perf_counter()
        perm = rng.permutation(num_atoms.shape[0])
        fixed = [perm[i:i + B] for i in range(0, perm.shape[0], B)]
        rows.append(row(f'fixed B={B}', f'B={B}', fixed, num_atoms,
                        time.perf_counter() - t))
        budget = B * n_max * n_max
        for bucket in map(int, args.bucket_sizes.split(',')):
            t = time.perf_counter()
            sampler = DynamicBatchSampler(num_atoms, max_pairs=budget,
                                          bucket_size=bucket, seed=args.seed,
                                          num_replicas=1, rank=0)
            batches = list(sampler)
            rows.append(row(f'dynamic bucket={bucket}',
                            f'pairs<={budget}', batches, num_atoms,
                            time.perf_counter() - t))
        t = time.perf_counter()
        inner = ScaffoldTemperatureSampler(scaffold_ids, num_replicas=1,
                                           rank=0, seed=args.seed)
        sampler = DynamicBatchSampler(num_atoms, max_pairs=budget,
                                      sampler=inner, seed=args.seed,
                                      num_replicas=1, rank=0)
        rows.append(row('dynamic+scaffold tau=0.005', f'pairs<={budget}',
                        list(sampler), num_atoms, time.perf_counter() - t))

    header = (f'{"method":<28} {"budget":>15} {"batches":>8} '
              f'{"mean B":>7} {"max B":>6} {"pair pad":>9} {"atom pad":>9}')
    print(header)
    print('-' * len(header))
    for r in rows:
        print(f'{r["method"]:<28} {r["budget"]:>15} {r["batches"]:>8} '
              f'{r["mean_batch"]:>7.1f} {r["max_batch"]:>6} '
              f'{100 * r["pair_padding"]:>8.2f}% '
              f'{100 * r["atom_padding"]:>8.2f}%')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        smiles=str(args.smiles), num_molecules=int(num_atoms.shape[0]),
        mean_atoms=float(num_atoms.mean()), max_atoms=n_max,
        definition='pair padding = 1 - sum n_i^2 / sum_b |b| L_b^2, '
        'L_b = largest molecule of batch b (to_dense); dynamic budget '
        'max_pairs = B * n_max^2, the worst case of a fixed batch of B',
        rows=rows), indent=2) + '\n')
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
