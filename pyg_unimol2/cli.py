"""The ``unimol2`` command line: ``finetune``, ``predict``, ``embed``,
``build-hdf5`` and ``pretrain``."""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .data.splits import (load_split, random_split, save_split,
                          scaffold_similarity_split, scaffold_split)
from .pretrain.cli import add_parser as add_pretrain_parser


def _finetune(args: argparse.Namespace) -> None:
    import torch

    from .datasets import load_property_dataset
    from .train.finetune import FinetuneConfig, finetune

    if args.threads:
        torch.set_num_threads(args.threads)

    dataset, targets, units = load_property_dataset(
        args.dataset, args.root, args.targets.split(','), subset=args.subset,
        workers=args.workers, csv_path=args.csv)
    out = Path(args.out)
    split_path = Path(args.split_file) if args.split_file else \
        out / f'split_{args.split}_seed{args.seed}.npz'
    if split_path.exists():
        split = load_split(split_path)
    elif args.split == 'scaffold':
        split = scaffold_split([d.smiles for d in dataset], seed=args.seed)
    elif args.split == 'scaffold_similarity':
        split = scaffold_similarity_split([d.smiles for d in dataset],
                                          seed=args.seed)
    else:
        split = random_split(len(dataset), seed=args.seed)
    save_split(split, split_path)

    config = FinetuneConfig(
        preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, warmup_ratio=args.warmup_ratio, loss=args.loss,
        pooler_dropout=args.pooler_dropout, seed=args.seed,
        num_workers=args.num_workers, device=args.device, out=str(out),
        max_minutes=args.max_minutes,
        model_overrides=_dropout_overrides(args),
        conformers=args.conformers, drop_feat=args.drop_feat,
        ema_decay=args.ema_decay, pretrained=args.pretrained,
        conformer_workers=args.workers)
    results = finetune(dataset, split, targets, config)
    print(f'\nTest MAE (best validation epoch {results["best_epoch"]}):')
    print(f'{"target":<10} {"MAE":>12} {"train-mean MAE":>16}  unit')
    for name in targets:
        print(f'{name:<10} {results["test_mae"][name]:>12.6f} '
              f'{results["train_mean_baseline_mae"][name]:>16.6f}  '
              f'{units[name]}')
    print(f'checkpoint: {out / "best.pt"}; TensorBoard: tensorboard '
          f'--logdir {out}')


def _dropout_overrides(args: argparse.Namespace) -> dict:
    """Model dropout rates given on the command line (others: preset)."""
    overrides = {}
    if args.dropout is not None:
        overrides.update(dropout=args.dropout, attention_dropout=args.dropout)
    if args.pair_dropout is not None:
        overrides.update(pair_dropout=args.pair_dropout)
    return overrides


def _predict(args: argparse.Namespace) -> None:
    from .models.regressor import load_regressor
    from .train.predict import (predict_smiles, read_smiles,
                                write_predictions)

    model = load_regressor(args.checkpoint)
    smiles = read_smiles(args.smiles)
    preds, result = predict_smiles(model, smiles, args.batch_size,
                                   args.workers, args.seed, args.device)
    write_predictions(args.out, smiles, preds, result, model.target_names)
    print(f'wrote {len(result.data)} predictions to {args.out}')
    if result.failures:
        print(f'{len(result.failures)} molecules skipped (see '
              f'{Path(args.out).with_suffix(".failures.csv")}):')
        for failure in result.failures[:20]:
            print(f'  line {failure.index + 1}: {failure.reason}')


def _embed(args: argparse.Namespace) -> None:
    from .train.embed import embed_smiles
    from .train.predict import read_smiles

    smiles = read_smiles(args.smiles)
    failures = embed_smiles(args.checkpoint, smiles, args.out,
                            batch_size=args.batch_size, workers=args.workers,
                            seed=args.seed, device=args.device)
    print(f'wrote {len(smiles) - len(failures)} molecules to {args.out}')
    if failures:
        print(f'{len(failures)} molecules skipped (see '
              f'{Path(args.out).with_suffix(".failures.csv")}):')
        for failure in failures[:20]:
            print(f'  line {failure.index + 1}: {failure.reason}')


def _build_hdf5(args: argparse.Namespace) -> None:
    from .data.store import build_store

    build_store(args.inputs, args.out_dir, workers=args.workers,
                shard_size=args.shard_size, seed=args.seed, limit=args.limit,
                max_atoms=args.max_atoms, optimize=not args.no_optimize,
                chunksize=args.chunksize, progress=not args.no_progress)


def _add_inference_arguments(parser: argparse.ArgumentParser,
                             out_help: str) -> None:
    """Options shared by ``predict`` and ``embed``."""
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--smiles', required=True,
                        help='.smi/.txt (one SMILES per line) or .csv file')
    parser.add_argument('--out', required=True, help=out_help)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--workers', type=int, default=None,
                        help='featurization processes (default: all cores)')
    parser.add_argument('--seed', type=int, default=0,
                        help='ETKDG seed of every molecule')
    parser.add_argument('--device', default='cpu')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='unimol2', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)

    ft = sub.add_parser('finetune', help='fine-tune on QM9 or COMPAS-1D')
    ft.add_argument('--dataset', choices=['qm9', 'compas1d'], required=True)
    ft.add_argument('--targets', required=True,
                    help='comma-separated, e.g. homo,lumo,gap')
    ft.add_argument('--root', default='data', help='dataset cache directory')
    ft.add_argument('--csv', default=None,
                    help='COMPAS-1D CSV file (else ROOT/compas1d/raw/)')
    ft.add_argument('--subset', type=int, default=None,
                    help='use a seeded random subset of this many molecules')
    ft.add_argument('--preset', default='small')
    ft.add_argument('--epochs', type=int, default=40)
    ft.add_argument('--max-minutes', type=float, default=None,
                    help='wall-clock training budget: stop (after a last '
                    'validation) when it is spent')
    ft.add_argument('--threads', type=int, default=None,
                    help='PyTorch CPU threads (1 is fastest for small '
                    'models on a busy machine)')
    ft.add_argument('--batch-size', type=int, default=32)
    ft.add_argument('--lr', type=float, default=1e-4)
    ft.add_argument('--warmup-ratio', type=float, default=0.06)
    ft.add_argument('--loss', choices=['smooth_l1', 'l1'], default='smooth_l1')
    ft.add_argument('--pooler-dropout', type=float, default=0.0)
    ft.add_argument('--dropout', type=float, default=None,
                    help='residual and attention dropout (default: 0.1 as '
                    'the official model)')
    ft.add_argument('--pair-dropout', type=float, default=None,
                    help='triangle-update dropout (default: 0.25)')
    ft.add_argument('--split', choices=['random', 'scaffold',
                                        'scaffold_similarity'],
                    default='random')
    ft.add_argument('--conformers', type=int, default=1,
                    help='conformers per molecule: one drawn per epoch in '
                    'training, predictions averaged at evaluation '
                    '(official recipe: 11)')
    ft.add_argument('--drop-feat', action='store_true',
                    help='drop the atom/bond features: elements and '
                    'geometry only (official recipe)')
    ft.add_argument('--ema-decay', type=float, default=None,
                    help='evaluate and save an exponential moving average '
                    'of the weights (e.g. 0.999)')
    ft.add_argument('--pretrained', default=None, metavar='CKPT',
                    help='initialise the backbone from this checkpoint')
    ft.add_argument('--split-file', default=None,
                    help='reuse (or write) the split in this .npz file')
    ft.add_argument('--seed', type=int, default=0)
    ft.add_argument('--workers', type=int, default=None,
                    help='featurization processes (default: all cores)')
    ft.add_argument('--num-workers', type=int, default=0,
                    help='DataLoader worker processes')
    ft.add_argument('--device', default='cpu')
    ft.add_argument('--out', default='runs/finetune')
    ft.set_defaults(func=_finetune)

    pr = sub.add_parser('predict', help='predict properties for SMILES')
    _add_inference_arguments(pr, out_help='output CSV')
    pr.set_defaults(func=_predict)

    em = sub.add_parser(
        'embed', help='molecule and atom representations to HDF5',
        description='Writes the CLS and per-atom representations of a '
        'checkpoint (ours or an official Uni-Mol2 one) for every SMILES to '
        'an HDF5 file; bad molecules are skipped and listed in '
        'OUT.failures.csv.')
    _add_inference_arguments(em, out_help='output .h5 file')
    em.set_defaults(func=_embed)

    add_pretrain_parser(sub)

    bh = sub.add_parser(
        'build-hdf5', help='featurize SMILES files into a sharded HDF5 store',
        description='Embeds one conformer per molecule (ETKDGv3 + MMFF94) '
        'in parallel and writes a sharded HDF5 store with a manifest and a '
        'failure report. Rerunning resumes an interrupted build; a '
        'complete store is left untouched.')
    bh.add_argument('inputs', nargs='+', metavar='INPUT',
                    help='.smi, .csv or .tsv files, optionally gzipped')
    bh.add_argument('out_dir', metavar='OUT_DIR', help='store directory')
    bh.add_argument('--workers', type=int, default=None,
                    help='featurization processes (default: all cores)')
    bh.add_argument('--shard-size', type=int, default=10000,
                    help='input records per shard (default: 10000)')
    bh.add_argument('--seed', type=int, default=0,
                    help='ETKDG seed of every molecule (default: 0)')
    bh.add_argument('--limit', type=int, default=None,
                    help='use only the first LIMIT input records')
    bh.add_argument('--max-atoms', type=int, default=256,
                    help='skip molecules with more heavy atoms (max 256)')
    bh.add_argument('--no-optimize', action='store_true',
                    help='skip the MMFF94 optimization')
    bh.add_argument('--chunksize', type=int, default=8,
                    help='molecules sent to a worker at once (default: 8)')
    bh.add_argument('--no-progress', action='store_true',
                    help='no progress bar')
    bh.set_defaults(func=_build_hdf5)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == '__main__':
    main(sys.argv[1:])
