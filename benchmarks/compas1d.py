"""COMPAS-1D benchmark of the Uni-Mol2 paper (Table 5): aEA, aIP, dispersion
and dipole moment, each trained separately, with and without the atom/bond
features (the paper's starred rows); test MAE (eV, Debye), mean (std) over
seeds, next to SchNet, DimeNet++ and a Morgan-fingerprint MLP trained on the
same split with the same budget. Conformers are generated with RDKit
(the CSV has no geometries).

Full run (GPU node)::

    python benchmarks/compas1d.py --preset 84M --pretrained CKPT \\
        --csv /path/compas-1D_b3lyp-d3bj_def2-svp.csv --device cuda

CPU smoke run: ``python benchmarks/compas1d.py --smoke --csv CSV``.
"""
import sys
from typing import List, Optional

from pyg_unimol2.bench import harness
from pyg_unimol2.bench.results import write_results

TARGETS = ['aEA', 'aIP', 'dispersion', 'dipmom']


def main(argv: Optional[List[str]] = None) -> None:
    parser = harness.bench_parser(__doc__, features='both')
    parser.add_argument('--targets', default=','.join(TARGETS))
    args = harness.parse(parser, argv)
    targets = args.targets.split(',')[:1 if args.smoke else None]
    dataset, units = harness.load_dataset(args, 'compas1d', targets)
    if args.split_report:
        return harness.write_split_report(args, 'compas1d', dataset,
                                          'compas1d')
    split = harness.load_split(args, 'compas1d', dataset)
    rows = harness.run_tasks(args, 'compas1d', lambda seed: split['split'],
                             [[t] for t in targets], 'compas1d')
    write_results(args.results_dir,
                  'compas1d_smoke' if args.smoke else 'compas1d',
                  'COMPAS-1D (paper Table 5): test MAE', rows, targets,
                  units, 'table5', args.command, harness.meta(args, split))


if __name__ == '__main__':
    main(sys.argv[1:])
