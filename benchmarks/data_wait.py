"""Data-wait fraction of the two real training loops, per number of
DataLoader workers.

The *data-wait fraction* (:class:`pyg_unimol2.train.data_wait.DataWait`)
is the share of the training steps' wall time that the loop spends waiting
for its batches: blocked in ``next()`` on the batch stream, copying the
batch to the device and (pretraining) corrupting it. Each run is the
command line of a user, in a subprocess, read back from its outputs:

* ``finetune``: ``unimol2 finetune --dataset qm9 --subset N --preset tiny
  --epochs 1`` (``results.json``: ``data_wait``);
* ``pretrain``: ``unimol2 pretrain`` on a store of the first ``--molecules``
  MOSES test SMILES (built once with ``unimol2 build-hdf5``), tiny preset,
  ``--steps`` steps (its final line: ``data_wait=...``); once with the
  default objective and once with 2D coordinates (``--use-2d-prob 0.5``,
  RDKit layouts computed in the collate, the most expensive data path).

Every run is repeated ``--repeats`` times (the machine may be shared).
``default`` in ``--workers`` passes no ``--num-workers`` flag (the default,
``min(2, cores - 1)``).

    python benchmarks/data_wait.py [--workers default,0] [--repeats 2]

Prints a markdown table and writes ``benchmarks/results/data_wait.json`` and
``data_wait.md`` with the command.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

from pyg_unimol2.bench.shared import moses_test
from pyg_unimol2.data.prefetch import default_workers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MOSES_TEST = moses_test()
UNIMOL2 = [sys.executable, '-m', 'pyg_unimol2.cli']


def _run(args: List[str]) -> str:
    """Runs ``unimol2 ARGS``; its standard output."""
    done = subprocess.run(UNIMOL2 + args, cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    if done.returncode != 0:
        raise RuntimeError(f'unimol2 {" ".join(args)} failed:\n'
                           f'{done.stdout}\n{done.stderr}')
    return done.stdout


def _worker_flag(workers: str) -> List[str]:
    return [] if workers == 'default' else ['--num-workers', workers]


def finetune(work: Path, subset: int, workers: str, repeat: int) -> float:
    out = work / f'finetune_{workers}_{repeat}'
    _run(['finetune', '--dataset', 'qm9', '--subset', str(subset),
          '--preset', 'tiny', '--epochs', '1', '--threads', '1',
          '--workers', '1', '--root', str(work / 'data'), '--out', str(out)]
         + _worker_flag(workers))
    return json.loads((out / 'results.json').read_text())['data_wait']


def pretrain(store: Path, work: Path, steps: int, workers: str,
             repeat: int, use_2d: bool) -> float:
    out = work / f'pretrain_{workers}_{int(use_2d)}_{repeat}'
    stdout = _run(['pretrain', '--store', str(store), '--out', str(out),
                   '--preset', 'tiny', '--max-steps', str(steps),
                   '--warmup-steps', '4', '--max-tokens', '512',
                   '--valid-every', str(steps), '--ckpt-every', str(steps),
                   '--threads', '1', '--no-progress',
                   '--use-2d-prob', '0.5' if use_2d else '0']
                  + _worker_flag(workers))
    return float(re.search(r'data_wait=(\S+)', stdout).group(1))


def build_store(work: Path, molecules: int) -> Path:
    store = work / f'moses{molecules}'
    _run(['build-hdf5', str(MOSES_TEST), str(store), '--limit',
          str(molecules), '--no-optimize', '--workers', '1',
          '--no-progress'])
    return store


def _table(runs: Dict[str, Dict[str, List[float]]]) -> str:
    lines = ['| loop | ' + ' | '.join(f'workers={w}' for w in
                                      next(iter(runs.values()))) + ' |',
             '|---|' + '---|' * len(next(iter(runs.values())))]
    for loop, per in runs.items():
        cells = [' / '.join(f'{100 * v:.1f}%' for v in values)
                 for values in per.values()]
        lines.append(f'| {loop} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workers', default='default,0',
                        help='worker counts, comma-separated ("default": '
                        'no --num-workers flag)')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--subset', type=int, default=2000,
                        help='QM9 molecules of the fine-tuning run')
    parser.add_argument('--molecules', type=int, default=400,
                        help='MOSES molecules of the pretraining store')
    parser.add_argument('--steps', type=int, default=40,
                        help='pretraining steps')
    parser.add_argument('--work', default=None,
                        help='work directory (default: a temporary one); '
                        'the QM9 subset and the store are reused from it')
    parser.add_argument('--out', default=str(HERE / 'results' /
                                             'data_wait.json'))
    args = parser.parse_args(argv)
    workers = args.workers.split(',')
    work = Path(args.work or tempfile.mkdtemp(prefix='data_wait_'))
    work.mkdir(parents=True, exist_ok=True)
    store = build_store(work, args.molecules)
    loops = {
        f'finetune qm9 {args.subset}, tiny, 1 epoch':
            lambda w, r: finetune(work, args.subset, w, r),
        f'pretrain moses {args.molecules}, tiny, {args.steps} steps':
            lambda w, r: pretrain(store, work, args.steps, w, r, False),
        f'pretrain moses {args.molecules}, tiny, {args.steps} steps, 2D':
            lambda w, r: pretrain(store, work, args.steps, w, r, True)}
    runs: Dict[str, Dict[str, List[float]]] = {}
    for loop, run in loops.items():
        runs[loop] = {w: [run(w, r) for r in range(args.repeats)]
                      for w in workers}
        print(loop, runs[loop], flush=True)
    command = ' '.join(['python benchmarks/data_wait.py'] + (
        sys.argv[1:] if argv is None else argv))
    table = _table(runs)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        command=command, runs=runs, default_workers=default_workers(),
        cores=len(os.sched_getaffinity(0)), load_average=os.getloadavg(),
        torch=torch.__version__, machine=platform.machine(),
        processor=platform.processor()), indent=2) + '\n')
    out.with_suffix('.md').write_text(
        '# Data-wait fraction of the training loops\n\n```bash\n' + command +
        '\n```\n\n' + table + '\n\nShare of the training steps\' wall time '
        'spent waiting for batches (`data_wait`, one value per repeat), on '
        f'{len(os.sched_getaffinity(0))} cores (load average '
        f'{os.getloadavg()[0]:.1f} at the end); `default` is '
        f'`--num-workers {default_workers()}` here. CPU, `--threads 1`.\n')


if __name__ == '__main__':
    main()
