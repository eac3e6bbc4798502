"""Limited-data QM9 benchmark of the Uni-Mol2 paper (Table 6): HOMO, LUMO
and gap (each trained separately) from train50 / train100 / train200
training sets, drawn from the training part so that they are stratified by
quantile bins of the test set's HOMO-LUMO gap; test MAE (Hartree), mean
(std) over seeds (each seed draws its own training subset), next to SchNet,
DimeNet++ and a Morgan-fingerprint MLP trained on the same molecules with
the same budget. ``--sizes`` counts molecules; the paper defines trainN as
N% of the test-set size (about 6,500 / 13,000 / 26,000 molecules for all of
QM9), see the note under the table.

Full run (GPU node)::

    python benchmarks/qm9_limited.py --preset 84M --pretrained CKPT \\
        --device cuda

CPU smoke run: ``python benchmarks/qm9_limited.py --smoke``.
"""
import sys
from typing import Dict, List, Optional

import torch

from pyg_unimol2.bench import harness
from pyg_unimol2.bench.results import write_results
from pyg_unimol2.bench.splits import limited_split


def split_description(split: Dict, sizes: List[int], valid_size: int) -> str:
    """The ``split`` line under the table: the base split and the sizes the
    models were actually trained, validated and tested on (see
    :func:`~pyg_unimol2.bench.splits.limited_split`)."""
    base = split['sizes']
    valid = (f'{valid_size} random of its {base["valid"]}'
             if 0 < valid_size < base['valid'] else f'its {base["valid"]}')
    return (f'{split["kind"]} (seed {split["seed"]}); train: '
            f'{" / ".join(map(str, sizes))} molecules (per size and seed a '
            f'stratified subset of its {base["train"]} training molecules); '
            f'valid: {valid}; test: its {base["test"]}')


def main(argv: Optional[List[str]] = None) -> None:
    parser = harness.bench_parser(__doc__)
    parser.add_argument('--sizes', default='50,100,200',
                        help='training-set sizes')
    parser.add_argument('--targets', default='homo,lumo,gap')
    parser.add_argument('--valid-size', type=int, default=0,
                        help='random validation subset (0: all)')
    parser.add_argument('--bins', type=int, default=10,
                        help='quantile bins of the test gap')
    args = harness.parse(parser, argv)
    targets = args.targets.split(',')
    sizes = [int(s) for s in args.sizes.split(',')]
    if args.smoke:
        targets, sizes, args.valid_size = targets[-1:], sizes[:1], 40
    dataset, _ = harness.load_dataset(args, 'qm9', ['gap'])
    units = harness.load_dataset(args, 'qm9', targets)[1]
    split = harness.load_split(args, 'qm9', dataset)
    gap = torch.cat([d.y for d in dataset])[:, 0].numpy()
    rows = []
    for size in sizes:
        size_rows = harness.run_tasks(
            args, 'qm9', lambda seed: limited_split(
                split['split'], gap, size, seed, args.valid_size,
                args.bins),
            [[t] for t in targets], f'qm9_limited/train{size}')
        for row in size_rows:
            row['model'] = f'train{size}: {row["model"]}'
        rows += size_rows
    stem = 'qm9_limited' + ('_smoke' if args.smoke else
                            f'_train{args.sizes.replace(",", "_")}')
    meta = harness.meta(args, split, train_sizes=sizes,
                        valid_size=args.valid_size or 'all',
                        stratification=f'{args.bins} quantile bins of the '
                        'test gap')
    meta['split'] = split_description(split, sizes, args.valid_size)
    write_results(args.results_dir, stem,
                  'QM9 limited data (paper Table 6): test MAE', rows, targets,
                  units, 'table6', args.command, meta)


if __name__ == '__main__':
    main(sys.argv[1:])
