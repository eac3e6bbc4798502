"""QM9 benchmark of the Uni-Mol2 paper (Table 4): HOMO, LUMO and gap trained
jointly as one task; alpha, Cv, mu, R2 and ZPVE each separately; test MAE,
mean (std) over seeds, in the paper's units (Hartree, bohr^3, cal/(mol K),
Debye, bohr^2), next to SchNet, DimeNet++ and a Morgan-fingerprint MLP
trained on the same split with the same budget.

Full run (GPU node; the official recipe: 84M, 11 conformers, features
dropped, 40 epochs, 3 seeds, scaffold-similarity split)::

    python benchmarks/qm9.py --preset 84M --pretrained CKPT --device cuda

CPU smoke run: ``python benchmarks/qm9.py --smoke``.
"""
import sys
from typing import List, Optional

from pyg_unimol2.bench import harness
from pyg_unimol2.bench.results import write_results

TASKS = [['homo', 'lumo', 'gap'], ['alpha'], ['cv'], ['mu'], ['r2'], ['zpve']]


def main(argv: Optional[List[str]] = None) -> None:
    parser = harness.bench_parser(__doc__)
    parser.add_argument('--tasks', default=None,
                        help='e.g. "homo+lumo+gap,alpha" (default: Table 4)')
    args = harness.parse(parser, argv)
    tasks = TASKS if args.tasks is None else \
        [t.split('+') for t in args.tasks.split(',')]
    if args.smoke:
        tasks = tasks[:2]
    dataset, units = harness.load_dataset(args, 'qm9', sum(tasks, []))
    if args.split_report:
        return harness.write_split_report(args, 'qm9', dataset, 'qm9')
    split = harness.load_split(args, 'qm9', dataset)
    rows = harness.run_tasks(args, 'qm9', lambda seed: split['split'], tasks,
                             'qm9')
    write_results(args.results_dir, 'qm9_smoke' if args.smoke else 'qm9',
                  'QM9 (paper Table 4): test MAE', rows, sum(tasks, []),
                  units, 'table4', args.command, harness.meta(args, split))


if __name__ == '__main__':
    main(sys.argv[1:])
