r"""Pretrained vs from scratch on the limited-data QM9 benchmark (paper
Table 6) and COMPAS-1D (Table 5), with the checkpoints of the scaling study
(``benchmarks/scaling_study.py``).

For each preset of ``--presets`` (smallest first) and each seed it runs
``benchmarks/qm9_limited.py`` (HOMO, LUMO and gap for the largest preset,
the gap for the others) and ``benchmarks/compas1d.py`` (the largest preset)
twice, once
with ``--pretrained`` the preset's last pretraining checkpoint and once from
scratch, everything else equal (split, training subsets, budget, lr), as
separate processes, ``--parallel`` at a time (one thread each); then merges
every benchmark's runs into one table
(``RESULTS/pretrained_vs_scratch_{qm9_limited,compas1d}.{json,md}``) with the
paper's numbers beside ours.

Example (the committed tables)::

    python benchmarks/pretrained_vs_scratch.py --scaling runs/scaling
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List

from pyg_unimol2.bench.processes import run_parallel
from pyg_unimol2.bench.results import merge_results
from pyg_unimol2.bench.shared import shared_datasets
from pyg_unimol2.checkpoints.writer import latest_checkpoint

HERE = Path(__file__).resolve().parent
COMPAS = shared_datasets() / 'compas-1d' / 'compas-1D_b3lyp-d3bj_def2-svp.csv'


def jobs(args) -> List[Dict]:
    """One job per benchmark, preset, initialisation and seed."""
    out = []
    presets = args.presets.split(',')
    for preset in presets[::-1]:  # the largest first
        largest = preset == presets[-1]
        checkpoint = latest_checkpoint(args.scaling / preset / 'checkpoints')
        if checkpoint is None:
            sys.exit(f'no pretraining checkpoint in {args.scaling / preset}'
                     f'; run benchmarks/scaling_study.py first')
        for seed in range(args.seeds):  # pairs first: a seed, both inits
            for init in ('pretrained', 'scratch'):
                extra = ['--pretrained', str(checkpoint)] \
                    if init == 'pretrained' else []
                common = ['--preset', preset, '--models', 'unimol2',
                          '--graph-features', 'keep', '--conformers', '1',
                          '--lr', str(args.lr), '--epochs', '1000',
                          '--seeds', '1', '--first-seed', str(seed),
                          '--threads', '1', '--workers', '1'] + extra
                name = f'{preset}_{init}_seed{seed}'
                out.append(dict(bench='qm9_limited', name=name, command=[
                    'benchmarks/qm9_limited.py', '--subset', '20000',
                    '--sizes', '50,100,200', '--targets',
                    args.qm9_targets if largest else args.qm9_other_targets,
                    '--valid-size', '200',
                    '--budget-minutes', str(args.qm9_minutes)] + common))
                if largest or args.compas_all:
                    out.append(dict(bench='compas1d', name=name, command=[
                        'benchmarks/compas1d.py', '--csv', str(args.compas),
                        '--targets', args.compas_targets, '--budget-minutes',
                        str(args.compas_minutes)] + common))
    return out


def run(args, todo: List[Dict]) -> None:
    """Runs the jobs whose results are missing, ``--parallel`` at a time
    (a failing job is reported and the others go on)."""
    commands = []
    for job in todo:
        if result_file(args, job).is_file():
            continue
        parts = args.work / job['bench'] / job['name']
        parts.mkdir(parents=True, exist_ok=True)
        runs = args.work / 'runs' / job['name']
        runs.mkdir(parents=True, exist_ok=True)
        if not (runs / 'splits').exists():  # one split for every job
            (args.work / 'splits').mkdir(exist_ok=True)
            (runs / 'splits').symlink_to((args.work / 'splits').resolve())
        commands.append((f'{job["bench"]} {job["name"]}',
                         [sys.executable] + job['command'] + [
                             '--results-dir', str(parts),
                             '--runs-dir', str(runs)],
                         parts / 'log.txt'))
    run_parallel(commands, args.parallel)


def result_file(args, job: Dict) -> Path:
    stem = 'qm9_limited_train50_100_200' if job['bench'] == 'qm9_limited' \
        else 'compas1d'
    return args.work / job['bench'] / job['name'] / f'{stem}.json'


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scaling', type=Path, default=Path('runs/scaling'),
                        help='the work directory of scaling_study.py')
    parser.add_argument('--work', type=Path, default=Path('runs/pvs'))
    parser.add_argument('--results-dir', type=Path,
                        default=HERE / 'results')
    parser.add_argument('--presets', default='tiny,small')
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--lr', type=float, default=4e-4)
    parser.add_argument('--qm9-targets', default='homo,lumo,gap',
                        help='QM9 targets of the largest preset')
    parser.add_argument('--qm9-other-targets', default='gap',
                        help='QM9 targets of the other presets')
    parser.add_argument('--qm9-minutes', type=float, default=0.5)
    parser.add_argument('--compas-all', action='store_true',
                        help='COMPAS-1D for every preset (default: the '
                        'largest only)')
    parser.add_argument('--compas', type=Path, default=COMPAS)
    parser.add_argument('--compas-targets', default='aEA,dipmom')
    parser.add_argument('--compas-minutes', type=float, default=1.5)
    parser.add_argument('--parallel', type=int, default=2)
    parser.add_argument('--benchmarks', default='qm9_limited,compas1d',
                        type=lambda s: s.split(','))
    args = parser.parse_args(argv)
    todo = [j for j in jobs(args) if j['bench'] in args.benchmarks]
    run(args, todo)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for bench in args.benchmarks:
        parts = [str(result_file(args, j)) for j in todo
                 if j['bench'] == bench and result_file(args, j).is_file()]
        if parts:
            path = merge_results(parts, str(args.results_dir),
                                 f'pretrained_vs_scratch_{bench}')
            print(path.read_text())


if __name__ == '__main__':
    main()
