r"""CPU-scale scaling study (paper section 4, eq. 10, Table 3, Fig. 4).

Pretrains every preset of ``--presets`` with ``unimol2 pretrain`` on one
molecule store (``unimol2 build-hdf5``), all with the same batch size,
learning-rate schedule, steps and seed, ``--parallel`` runs at a time (one
thread each); copies each run's ``metrics.jsonl`` and ``config.json`` into
``RESULTS/runs/<preset>/``; then fits eq. 10 on all but the ``--held-out``
largest sizes with :func:`pyg_unimol2.pretrain.scaling.scaling_fit` and
predicts those, writing ``RESULTS/scaling_fit.{json,png}`` and
``RESULTS.md``. A killed study resumes: finished runs are skipped, a
partial run continues from its last checkpoint.

The committed fit can be re-run without re-training::

    unimol2 scaling-fit benchmarks/results/scaling/runs/{80K,180K,420K,tiny} \
        --predict benchmarks/results/scaling/runs/{2M,small} --skip-steps 300

Example (the committed study and the shipped ``small-moses`` weights)::

    unimol2 build-hdf5 ../shared/datasets/moses/train.csv.gz \
        runs/scaling/moses_store --limit 40000 --workers 1
    python benchmarks/scaling_study.py --store runs/scaling/moses_store \
        --work runs/scaling --ship small:small-moses
"""
import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List

from pyg_unimol2.bench.processes import run_parallel
from pyg_unimol2.bench.results import write_keeping_notes
from pyg_unimol2.checkpoints import latest_checkpoint
from pyg_unimol2.checkpoints.bundled import WEIGHTS_DIR, ship_weights
from pyg_unimol2.pretrain.scaling import read_run, scaling_fit

HERE = Path(__file__).resolve().parent
PRESETS = '80K,180K,420K,tiny,2M,small'


def pretrain_command(args, preset: str) -> List[str]:
    """The ``unimol2 pretrain`` command of one run of the study."""
    return [sys.executable, '-m', 'pyg_unimol2.pretrain',
            '--store', str(args.store), '--out', str(args.work / preset),
            '--preset', preset, '--max-steps', str(args.steps),
            '--max-batch-size', str(args.batch_size),
            '--max-tokens', '1000000', '--lr', str(args.lr),
            '--warmup-steps', str(args.warmup),
            '--valid-every', str(args.valid_every),
            '--valid-fraction', str(args.valid_fraction),
            '--ckpt-every', str(args.valid_every * 2),
            '--keep-checkpoints', '1', '--seed', str(args.seed),
            '--threads', '1', '--num-workers', '1', '--no-progress']


def finished(run: Path, steps: int) -> bool:
    """Whether :obj:`run` has its validation at the last step."""
    try:
        curve = read_run(run)
    except Exception:
        return False
    return curve.steps[-1] >= steps


def run_all(args, presets: List[str]) -> Dict[str, float]:
    """Runs the unfinished presets, ``--parallel`` at a time, the largest
    first; returns the wall seconds of each run made."""
    args.work.mkdir(parents=True, exist_ok=True)
    jobs = [(preset, pretrain_command(args, preset),
             args.work / f'{preset}.log') for preset in presets[::-1]
            if not finished(args.work / preset, args.steps)]
    for preset, _, _ in jobs:
        print(f'pretraining {preset}: {args.work / preset}', flush=True)
    done = run_parallel(jobs, args.parallel)
    failed = [name for name, (code, _) in done.items() if code != 0]
    if failed:
        sys.exit(f'pretraining failed: {", ".join(failed)} (see their logs '
                 f'in {args.work})')
    return {name: seconds for name, (_, seconds) in done.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--store', type=Path, required=True)
    parser.add_argument('--work', type=Path, default=Path('runs/scaling'))
    parser.add_argument('--results', type=Path,
                        default=Path('benchmarks/results/scaling'))
    parser.add_argument('--presets', default=PRESETS,
                        help='comma-separated, smallest first')
    parser.add_argument('--held-out', type=int, default=2,
                        help='the largest sizes predicted, not fitted')
    parser.add_argument('--steps', type=int, default=1200)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--lr', type=float, default=5e-4)
    parser.add_argument('--warmup', type=int, default=100)
    parser.add_argument('--valid-every', type=int, default=100)
    parser.add_argument('--valid-fraction', type=float, default=0.02)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--skip-steps', type=int, default=300,
                        help='the transient left out of the fit')
    parser.add_argument('--parallel', type=int, default=2)
    parser.add_argument('--ship', default=None, metavar='PRESET:NAME',
                        help='also write the last checkpoint of PRESET as '
                        'the shipped weights NAME (pyg_unimol2/weights/)')
    parser.add_argument('--weights-dir', type=Path, default=WEIGHTS_DIR,
                        help='where --ship writes (default: the package)')
    args = parser.parse_args(argv)
    presets = args.presets.split(',')
    previous = args.results / 'study.json'
    seconds = json.loads(previous.read_text())['seconds'] \
        if previous.is_file() else {}
    seconds.update(run_all(args, presets))

    runs = args.results / 'runs'
    for preset in presets:
        (runs / preset).mkdir(parents=True, exist_ok=True)
        for name in ('metrics.jsonl', 'config.json'):
            shutil.copy(args.work / preset / name, runs / preset / name)
    fitted = [runs / p for p in presets[:-args.held_out]]
    held = [runs / p for p in presets[-args.held_out:]]
    report = scaling_fit(fitted, held, skip_steps=args.skip_steps)
    report.write(args.results)
    table = report.table()
    print(table)
    record = dict(command=' '.join(['python', 'benchmarks/scaling_study.py'] + (
        sys.argv[1:] if argv is None else list(argv))),
                  pretrain_command=pretrain_command(args, '<preset>')[1:],
                  seconds=seconds, presets={
                      p: dict(parameters=read_run(runs / p).num_parameters,
                              final_valid_loss=float(
                                  read_run(runs / p).loss[-1]))
                      for p in presets})
    (args.results / 'study.json').write_text(json.dumps(record, indent=2))
    markdown(args, record, table, fitted, held)
    if args.ship:
        ship(args, record, *args.ship.split(':'))


def markdown(args, record: dict, table: str, fitted: List[Path],
             held: List[Path]) -> None:
    """``RESULTS.md``: the commands, the presets and the fit."""
    from pyg_unimol2.models import PRESETS
    rel = [str(p.relative_to(HERE.parent)) if p.is_relative_to(HERE.parent)
           else str(p) for p in fitted + held]
    lines = ['# Scaling study: eq. 10 fitted on CPU-sized Uni-Mol2 runs', '',
             '```bash', record['command'], '```', '',
             'Each run (one thread):', '', '```bash',
             ' '.join(['python'] + record['pretrain_command']), '```', '',
             'The fit again, from the committed runs:', '', '```bash',
             f'unimol2 scaling-fit {" ".join(rel[:len(fitted)])} --predict '
             f'{" ".join(rel[len(fitted):])} --skip-steps {args.skip_steps} '
             f'--out {args.results.relative_to(HERE.parent) if args.results.is_relative_to(HERE.parent) else args.results}',
             '```', '',
             '| preset | parameters | layers | E | P | h | role | final '
             'valid loss | minutes |', '|---|---|---|---|---|---|---|---|---|']
    for preset, info in record['presets'].items():
        c = PRESETS[preset]
        role = 'fit' if args.results / 'runs' / preset in fitted else \
            'held out'
        minutes = record['seconds'].get(preset)
        lines.append(f'| {preset} | {info["parameters"]:,} | {c.num_layers} '
                     f'| {c.embed_dim} | {c.pair_dim} | {c.pair_hidden_dim} '
                     f'| {role} | {info["final_valid_loss"]:.4f} | '
                     f'{"n/a" if minutes is None else f"{minutes / 60:.1f}"}'
                     f' |')
    lines += ['', table, '', f'![actual vs predicted]'
              f'({args.results.name}/scaling_fit.png)', '']
    write_keeping_notes(args.results.with_suffix('.md'), '\n'.join(lines))


def ship(args, record: dict, preset: str, name: str) -> None:
    """The last checkpoint of :obj:`preset` as the shipped weights
    :obj:`name`, with the study's recipe and its validation loss."""
    checkpoint = latest_checkpoint(args.work / preset / 'checkpoints')
    run = read_run(args.results / 'runs' / preset)
    path = ship_weights(checkpoint, name, directory=args.weights_dir,
                        info=dict(
        recipe=record['command'], pretrain_command=' '.join(
            ['python'] + pretrain_command(args, preset)[1:]),
        steps=int(run.steps[-1]), valid_loss=float(run.loss[-1]),
        valid_metrics=final_validation(args.results / 'runs' / preset)))
    print(f'shipped {preset} as {name}: {path} '
          f'({path.stat().st_size / 2**20:.1f} MiB)')


def final_validation(run: Path) -> dict:
    """The last validation record of a run's ``metrics.jsonl``."""
    records = [json.loads(line) for line in
               (run / 'metrics.jsonl').read_text().splitlines() if line]
    last = [r for r in records if 'valid_loss' in r][-1]
    return {k: v for k, v in last.items() if k.startswith('valid_')}


if __name__ == '__main__':
    main()
