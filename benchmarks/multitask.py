"""The Graphium claim, measured: do low-resource biological tasks gain from
being trained jointly with quantum-chemistry tasks?

Tasks: B3DB blood-brain barrier (BBB+/BBB- AUROC and the sparse logBB
MAE, one dataset, scaffold split), three MoleculeACE bioactivity sets (MAE
and RMSE of y = -log10(activity / nM), their published train/test split),
FreeSolv (hydration free energy MAE, kcal/mol, scaffold split). Each is
trained (a) alone and (b) jointly with QM9 HOMO/LUMO/gap (a random subset,
temperature dataset sampling, T = 2) by the same Uni-Mol2 preset under the
same wall-clock budget, and (c) by a Morgan-fingerprint MLP in the same
harness. Mean (std) over seeds; every run is one job whose result is kept
under ``--runs-dir``, so the script resumes and can be spread over processes
(``--shard I/N``), then ``--report`` writes the table.

CPU run committed in ``benchmarks/results/multitask.md``::

    python benchmarks/multitask.py --budget-minutes 3 --shard 0/2 &
    python benchmarks/multitask.py --budget-minutes 3 --shard 1/2
    python benchmarks/multitask.py --budget-minutes 3 --report

Full run on a GPU: ``--preset 84M --pretrained CKPT --budget-minutes 30
--device cuda``.
"""
import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from pyg_unimol2.bench.shared import shared_datasets
from pyg_unimol2.datasets.specs import (DatasetSpec, make_run_split,
                                        open_dataset)
from pyg_unimol2.train.finetune import FinetuneConfig, TaskData, finetune

SHARED = shared_datasets()
MOLECULEACE = ('CHEMBL2835_Ki', 'CHEMBL2047_EC50', 'CHEMBL1871_Ki')
#: (dataset, task, metric) rows of the table.
ROWS = [('b3db', 'BBB+/BBB-', 'auroc'), ('b3db', 'logBB', 'mae')] + \
    [(m, 'y', metric) for m in MOLECULEACE for metric in ('mae', 'rmse')] + \
    [('freesolv', 'expt', 'mae')]
MODES = ('fingerprint', 'alone', 'joint')


def specs(args) -> Dict[str, DatasetSpec]:
    out = {'b3db': DatasetSpec('b3db', builtin='b3db', split='scaffold',
                               path=str(SHARED / 'b3db' /
                                        'B3DB_classification.tsv')),
           'freesolv': DatasetSpec('freesolv', builtin='freesolv',
                                   split='scaffold',
                                   path=str(SHARED / 'freesolv' /
                                            'freesolv.csv')),
           'qm9': DatasetSpec('qm9', builtin='qm9', subset=args.qm9_subset,
                              targets='homo,lumo,gap')}
    for m in MOLECULEACE:
        out[m] = DatasetSpec(m, builtin='moleculeace', target=m,
                             split='column',
                             path=str(SHARED / 'moleculeace' / f'{m}.csv'))
    return out


def jobs(args) -> List[Dict]:
    low = ['b3db', *MOLECULEACE, 'freesolv']
    return [dict(seed=s, dataset=d, mode=m) for s in range(args.seeds)
            for d in low for m in MODES]


def run_job(job: Dict, data: Dict[str, TaskData], args) -> Dict:
    config = FinetuneConfig(
        preset=args.preset, epochs=args.epochs, batch_size=32, lr=args.lr,
        max_tokens=args.max_tokens or None,
        seed=job['seed'], max_minutes=args.budget_minutes,
        pretrained=args.pretrained, device=args.device, progress=False,
        out=str(Path(args.runs_dir) / f"{job['mode']}_{job['dataset']}"
                f"_seed{job['seed']}"))
    parts = [data[job['dataset']]]
    if job['mode'] == 'fingerprint':
        config = replace(config, model='fingerprint', lr=1e-3,
                         pretrained=None)
    elif job['mode'] == 'joint':
        parts.append(data['qm9'])
        config = replace(config, select_on=[job['dataset']])
    results = finetune(parts, config)
    return dict(job, seconds=results['seconds'], steps=results['steps'],
                test=results['datasets'][job['dataset']]['test'])


def report(args) -> None:
    done = [json.loads(p.read_text()) for p in
            sorted(Path(args.runs_dir).glob('job_*.json'))]
    rows = []
    header = ['dataset', 'task', 'metric', 'Morgan FP + MLP',
              f'Uni-Mol2 {args.preset} alone', f'Uni-Mol2 {args.preset} + QM9']
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    for dataset, task, metric in ROWS:
        cells, raw = [], {}
        for mode in MODES:
            values = [r['test'][task][metric] for r in done
                      if r['dataset'] == dataset and r['mode'] == mode and
                      r['test'][task].get(metric) is not None]
            raw[mode] = values
            cells.append(f'{np.mean(values):.3f} ({np.std(values):.3f}), '
                         f'n={len(values)}' if values else 'n/a')
        rows.append(dict(dataset=dataset, task=task, metric=metric, **raw))
        lines.append(f'| {dataset} | {task} | {metric} | ' +
                     ' | '.join(cells) + ' |')
    seconds = [r['seconds'] for r in done if r['mode'] != 'fingerprint']
    own = {m: [_own_batches(args, r) for r in done if r['mode'] == m]
           for m in ('alone', 'joint')}
    steps = {m: [r['steps'] for r in done if r['mode'] == m] for m in MODES}
    notes = [
        '', f'- {len(done)} runs; budget {args.budget_minutes:g} min wall '
        f'clock per run (validation included), 1 thread, this 2-core '
        f'machine shared by 2 benchmark processes; batches of at most 32 '
        f'molecules and {args.max_tokens} padded atoms; preset {args.preset} '
        f'from scratch' if not args.pretrained else
        f'- pretrained {args.pretrained}',
        '- optimizer steps per run, mean: ' + ', '.join(
            f'{m} {np.mean(v):.0f}' for m, v in steps.items() if v),
        f'- Uni-Mol2 run time, mean {np.mean(seconds):.0f} s' if seconds
        else '',
        '- batches of the low-resource dataset itself per run, mean: ' +
        ', '.join(f'{m} {np.mean(v):.0f}' for m, v in own.items() if v) +
        ' (joint runs take more, cheaper steps: QM9 molecules are small)',
        f'- joint: the dataset + QM9 HOMO/LUMO/gap ({args.qm9_subset} '
        f'molecules, random split), temperature sampling T = 2; splits: B3DB '
        f'and FreeSolv scaffold (seed 0), MoleculeACE its published '
        f'train/test split (valid carved from train); selection: best '
        f'validation epoch on the low-resource dataset\'s own tasks',
        f'- commands: `python benchmarks/multitask.py --budget-minutes '
        f'{args.budget_minutes:g} --shard 0/2` and `... --shard 1/2` in '
        f'parallel, then `python benchmarks/multitask.py --budget-minutes '
        f'{args.budget_minutes:g} --report`']
    table = '\n'.join(['## Graphium claim: low-resource biological tasks '
                       'alone vs jointly with QM9', ''] + lines + notes) + '\n'
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'multitask.md').write_text(table)
    (out / 'multitask.json').write_text(json.dumps(dict(
        rows=rows, runs=done, command=args.command), indent=2))
    print(table)


def _own_batches(args, job: Dict) -> int:
    """Training batches of the job's own dataset (``metrics.jsonl``)."""
    path = Path(args.runs_dir) / f"{job['mode']}_{job['dataset']}" \
        f"_seed{job['seed']}" / 'metrics.jsonl'
    key = f"loss/{job['dataset']}/"
    return sum(1 for line in path.read_text().splitlines()
               if key in line and '"group": "train"' in line)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--preset', default='tiny')
    p.add_argument('--pretrained', default=None)
    p.add_argument('--budget-minutes', type=float, default=2.0)
    p.add_argument('--epochs', type=int, default=100)
    p.add_argument('--max-tokens', type=int, default=1024,
                   help='padded atoms per batch (length-bucketed batches of '
                   'at most 32 molecules; 0: plain batches of 32)')
    p.add_argument('--lr', type=float, default=5e-4)
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--qm9-subset', type=int, default=5000)
    p.add_argument('--shard', default='0/1', help='I/N: run jobs I::N')
    p.add_argument('--report', action='store_true')
    p.add_argument('--smoke', action='store_true',
                   help='CI: one seed, FreeSolv only, a few steps')
    p.add_argument('--root', default='data')
    p.add_argument('--runs-dir', default='runs/bench/multitask')
    p.add_argument('--results-dir', default='benchmarks/results')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    args.command = 'python ' + ' '.join(shlex.quote(a) for a in (
        [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)))
    torch.set_num_threads(args.threads)
    if args.report:
        return report(args)
    index, count = (int(x) for x in args.shard.split('/'))
    todo = jobs(args)[index::count]
    if args.smoke:
        todo = [j for j in todo if j['dataset'] == 'freesolv'][:3]
        args.qm9_subset, args.epochs, args.budget_minutes = 200, 1, None
    needed = {j['dataset'] for j in todo} | {'qm9'}
    data = {}
    for name, spec in specs(args).items():
        if name in needed:
            dataset, tasks = open_dataset(spec, args.root,
                                          workers=args.workers,
                                          progress=False)
            data[name] = TaskData(name, dataset,
                                  make_run_split(spec, dataset), tasks)
    for job in todo:
        path = Path(args.runs_dir) / (f"job_{job['mode']}_{job['dataset']}_"
                                      f"seed{job['seed']}.json")
        if path.exists():
            continue
        result = run_job(job, data, args)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
        print(json.dumps({k: result[k] for k in ('dataset', 'mode', 'seed',
                                                  'steps')}))


if __name__ == '__main__':
    main()
