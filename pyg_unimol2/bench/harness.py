"""The shared command line and run loop of the ``benchmarks/*.py`` scripts.

A script names its dataset, its tasks (target groups trained jointly) and
its paper table; :func:`run_tasks` then trains every model of
``--models`` on every task, seed and feature mode under the same split and
budget, and writes the JSON and markdown tables.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..datasets import load_property_dataset
from ..train.finetune import FinetuneConfig
from .runner import run_model
from .splits import prepare_split

MODELS = ('unimol2', 'schnet', 'dimenet++', 'fingerprint')
FEATURE_MODES = {'keep': [False], 'drop': [True], 'both': [False, True]}
#: ``--smoke``: a few molecules, one short epoch, the smallest preset.
SMOKE = dict(subset=64, preset='tiny', epochs=1, seeds=1, conformers=2,
             batch_size=16)


def bench_parser(doc: str, *, features: str = 'drop',
                 split: str = 'scaffold_similarity') -> argparse.ArgumentParser:
    """The options every benchmark script takes (Table 9 grid included)."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a('--preset', default='84M', help='Uni-Mol2 preset (default: 84M)')
    a('--pretrained', default=None, metavar='CKPT',
      help='initialise the backbone from this checkpoint')
    a('--models', default=','.join(MODELS),
      help=f'comma-separated subset of {",".join(MODELS)}')
    a('--budget-minutes', type=float, default=None,
      help='wall-clock budget of every training run (same for all models)')
    a('--epochs', type=int, default=40)
    a('--lr', type=float, default=1e-4,
      help='Uni-Mol2 lr; Table 9 grid: 4e-5 6e-5 1e-4 2e-4 3e-4 4e-4')
    a('--batch-size', type=int, default=32, help='Table 9: 32 64 128')
    a('--pooler-dropout', type=float, default=0.0, help='Table 9: 0 0.1')
    a('--warmup-ratio', type=float, default=0.06, help='Table 9: 0 0.06 0.1')
    a('--seeds', type=int, default=3, help='number of seeds (mean (std))')
    a('--first-seed', type=int, default=0,
      help='seeds FIRST..FIRST+N-1 (to spread seeds over processes and '
      'merge with pyg_unimol2.bench.results.merge_results)')
    a('--split', default=split,
      choices=['random', 'scaffold', 'scaffold_similarity'])
    a('--split-seed', type=int, default=0)
    a('--subset', type=int, default=None,
      help='a seeded random subset of the dataset')
    a('--graph-features', choices=sorted(FEATURE_MODES), default=features,
      help='Uni-Mol2 input: keep the atom/bond features, drop them '
      '(elements + geometry only, official recipe), or both')
    a('--conformers', type=int, default=11,
      help='conformers per molecule, predictions averaged (official: 11)')
    a('--ema-decay', type=float, default=None,
      help='exponential moving average of the weights (e.g. 0.999)')
    a('--root', default='data', help='dataset cache directory')
    a('--csv', default=None, help='COMPAS-1D CSV')
    a('--results-dir', default='benchmarks/results')
    a('--runs-dir', default='runs/bench', help='TensorBoard logs')
    a('--threads', type=int, default=None)
    a('--workers', type=int, default=None, help='featurization processes')
    a('--device', default='cpu')
    a('--split-report', action='store_true',
      help='only write the test-to-train similarity of every split kind')
    a('--smoke', action='store_true',
      help=f'CI smoke run: {SMOKE} (overrides those options)')
    return p


def parse(parser: argparse.ArgumentParser,
          argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses options, applying ``--smoke`` and ``--threads``."""
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.budget_minutes = None
    if args.threads:
        torch.set_num_threads(args.threads)
    args.command = 'python ' + ' '.join(shlex.quote(a) for a in (
        [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)))
    return args


def load_dataset(args: argparse.Namespace, name: str,
                 targets: Sequence[str]):
    """The dataset with ``y`` = :obj:`targets` (the processed cache is
    shared by all target choices) and ``{target: unit}``."""
    dataset, _, units = load_property_dataset(
        name, args.root, targets, subset=args.subset, workers=args.workers,
        csv_path=args.csv, progress=False)
    return dataset, units


def _split_path(args: argparse.Namespace, name: str, kind: str) -> Path:
    return Path(args.runs_dir) / 'splits' / \
        f'{name}_{args.subset or "all"}_{kind}_seed{args.split_seed}.npz'


def load_split(args: argparse.Namespace, name: str, dataset) -> Dict:
    """The seeded split of :obj:`dataset`, saved under ``--runs-dir`` and
    measured (see :func:`~pyg_unimol2.bench.splits.prepare_split`)."""
    split = prepare_split([d.smiles for d in dataset], args.split,
                          args.split_seed, _split_path(args, name, args.split))
    print(f'split {args.split}: {split["sizes"]}, mean max Tanimoto of test '
          f'to train scaffolds {split["test_train_scaffold_tanimoto"]}')
    return split


def _config(args, seed: int, drop: bool, out: Path) -> FinetuneConfig:
    return FinetuneConfig(
        preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, warmup_ratio=args.warmup_ratio,
        pooler_dropout=args.pooler_dropout, seed=seed, device=args.device,
        out=str(out), max_minutes=args.budget_minutes,
        conformers=args.conformers, drop_feat=drop,
        ema_decay=args.ema_decay, pretrained=args.pretrained,
        conformer_workers=args.workers)


def model_label(args: argparse.Namespace, model: str, drop: bool) -> str:
    if model != 'unimol2':
        return {'schnet': 'SchNet', 'dimenet++': 'DimeNet++',
                'fingerprint': 'Morgan FP + MLP'}[model]
    init = 'pretrained' if args.pretrained else 'from scratch'
    feats = 'elements + geometry' if drop else 'with atom/bond features'
    return f'Uni-Mol2 {args.preset} ({init}, {feats})'


def run_tasks(args: argparse.Namespace, name: str,
              split_for: Callable[[int], Dict[str, np.ndarray]],
              tasks: List[List[str]], tag: str) -> List[Dict]:
    """Trains every model of ``--models`` on every task (target names trained
    jointly) for every seed, on the split ``split_for(seed)``; returns one
    row per model with, per target, the test MAE of every seed."""
    models = args.models.split(',')
    unknown = set(models) - set(MODELS)
    if unknown:
        raise ValueError(f'unknown models {sorted(unknown)}')
    rows: Dict[str, Dict] = {}
    for task in tasks:
        dataset, _ = load_dataset(args, name, task)
        for model in models:
            for drop in (FEATURE_MODES[args.graph_features]
                         if model == 'unimol2' else [False]):
                label = model_label(args, model, drop)
                row = rows.setdefault(label, dict(model=label, mae={},
                                                  runs=[]))
                for seed in range(args.first_seed,
                                  args.first_seed + args.seeds):
                    out = Path(args.runs_dir) / tag / model / \
                        ('drop' if drop else 'keep') / '_'.join(task) / \
                        f'seed{seed}'
                    res = run_model(model, dataset, split_for(seed), task,
                                    _config(args, seed, drop, out))
                    for t in task:
                        row['mae'].setdefault(t, []).append(
                            res['test_mae'][t])
                    row['runs'].append(dict(
                        task=task, seed=seed, test_mae=res['test_mae'],
                        epochs_run=res['epochs_run'],
                        best_epoch=res['best_epoch'],
                        seconds=round(res['seconds'], 1), out=str(out)))
    return list(rows.values())


def meta(args: argparse.Namespace, split: Dict, **extra) -> Dict:
    """The run settings recorded under a table."""
    budget = (f'{args.budget_minutes:g} min wall clock' if args.budget_minutes
              else f'{args.epochs} epochs')
    return dict(budget=budget, threads=torch.get_num_threads(),
                split=f'{split["kind"]} (seed {split["seed"]}), sizes '
                f'{split["sizes"]}',
                test_train_scaffold_tanimoto=split[
                    'test_train_scaffold_tanimoto'],
                seeds=args.seeds, preset=args.preset,
                pretrained=args.pretrained or 'none (from scratch)',
                conformers=args.conformers, ema_decay=args.ema_decay,
                lr=args.lr, batch_size=args.batch_size,
                subset=args.subset or 'all', **extra)


def write_split_report(args: argparse.Namespace, name: str, dataset,
                       stem: str) -> None:
    """``--split-report``: sizes and the mean max Tanimoto similarity of
    test to training scaffolds for every split kind, as
    ``<stem>_splits.{json,md}``."""
    smiles = [d.smiles for d in dataset]
    kinds = ('random', 'scaffold', 'scaffold_similarity')
    report = {kind: prepare_split(smiles, kind, args.split_seed,
                                  _split_path(args, name, kind))
              for kind in kinds}
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f'{stem}_splits.json').write_text(json.dumps(
        {k: {f: v[f] for f in ('sizes', 'test_train_scaffold_tanimoto')}
         for k, v in report.items()}, indent=2))
    lines = [f'## {name}: how far the test set is from training', '',
             '| split | train / valid / test | mean max Tanimoto, test to '
             'train scaffolds |', '|---|---|---|']
    lines += [f'| {k} | {v["sizes"]["train"]} / {v["sizes"]["valid"]} / '
              f'{v["sizes"]["test"]} | {v["test_train_scaffold_tanimoto"]} |'
              for k, v in report.items()]
    lines += ['', f'- command: `{args.command}`',
              f'- molecules: {len(smiles)} (subset: {args.subset or "all"}), '
              f'split seed {args.split_seed}; Morgan radius 2, 2,048 bits, '
              'over the distinct non-empty test scaffolds']
    (out / f'{stem}_splits.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
