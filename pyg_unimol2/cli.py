"""The ``unimol2`` command line: ``finetune``, ``predict``, ``embed``,
``build-hdf5`` (from SMILES or, with ``--format``, from structures with
energies and forces), ``pretrain`` and ``scaling-fit``."""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .data.formats import READERS as STRUCTURE_FORMATS
from .data.splits import load_split, save_split
from .errors import ConfigError, run_cli
from .models.unimol2 import PRESETS
from .pretrain.cli import add_parser as add_pretrain_parser


def _specs(args: argparse.Namespace):
    """The run's datasets and ``[train]`` settings, from ``--config`` or
    the flags."""
    from .datasets.specs import DatasetSpec, read_run_config
    if args.config:
        train, specs = read_run_config(args.config)
        return train, specs
    split = dict(split=args.split, split_col=args.split_col,
                 folds=args.folds, split_seed=args.seed)
    if args.data:
        if not args.targets:
            raise ConfigError('--data needs --targets: the label columns '
                              'and their kinds, e.g. --targets '
                              '"active:classification,pIC50:regression"')
        specs = [DatasetSpec(name=Path(p).name.split('.')[0] if
                             len(args.data) > 1 else 'data', path=p,
                             smiles_col=args.smiles_col,
                             targets=args.targets,
                             max_atoms=args.max_atoms, **split)
                 for p in args.data]
    elif args.dataset:
        names = args.dataset.split(',')
        if args.targets and len(names) > 1:
            raise ConfigError('--targets applies to one --dataset; describe '
                              'several datasets with their tasks in --config')
        specs = [DatasetSpec(name=n, builtin=n, path=args.csv,
                             targets=args.targets, subset=args.subset,
                             max_atoms=args.max_atoms, **split)
                 for n in names]
    else:
        raise ConfigError('unimol2 finetune needs data: give --data FILE, '
                          '--dataset NAME or --config FILE')
    return {}, specs


def _split_name(spec) -> str:
    """``split_<dataset>_<kind>[<fold>]_seed<seed>.npz``."""
    fold = spec.fold if spec.split == 'kfold' else ''
    return f'split_{spec.name}_{spec.split}{fold}_seed{spec.split_seed}.npz'


def _finetune(args: argparse.Namespace) -> None:
    import dataclasses

    import torch

    from .checkpoints import read_checkpoint
    from .datasets.specs import make_run_split, open_dataset
    from .train.finetune import FinetuneConfig, TaskData, finetune
    from .train.report import json_safe, print_results, summarize_folds

    if args.threads:
        torch.set_num_threads(args.threads)
    train, specs = _specs(args)
    config = FinetuneConfig(
        model=args.model, preset=args.preset, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, max_tokens=args.max_tokens,
        max_pairs=args.max_pairs, lr=args.lr, warmup_ratio=args.warmup_ratio,
        precision=args.precision, accumulation=args.accumulation,
        pooler_dropout=args.pooler_dropout, seed=args.seed,
        num_workers=args.num_workers, device=args.device, out=args.out,
        max_minutes=args.max_minutes, ckpt_every=args.ckpt_every,
        model_overrides=_dropout_overrides(args),
        conformers=args.conformers, drop_feat=args.drop_feat,
        ema_decay=args.ema_decay, pretrained=args.pretrained,
        keep_heads=not args.fresh_heads, mix=args.mix,
        temperature=args.temperature, conformer_workers=args.workers)
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = set(train) - known
    if unknown:
        raise ConfigError(f'config {args.config}: unknown [train] keys '
                          f'{sorted(unknown)} (known: '
                          f'{", ".join(sorted(known))})')
    config = dataclasses.replace(config, **train)
    if config.model == 'unimol2' and not config.pretrained and \
            config.preset not in PRESETS:
        raise ConfigError(f"unknown preset '{config.preset}' (use one of "
                          f"{', '.join(PRESETS)}, or --pretrained CKPT)")
    if config.pretrained and not Path(config.pretrained).is_file():
        read_checkpoint(config.pretrained)  # its error, before featurizing
    opened = [(s, *open_dataset(s, args.root, workers=args.workers))
              for s in specs]
    for task in (t for _, _, tasks in opened for t in tasks):
        if args.loss and task.kind == 'regression':
            task.loss = args.loss
    out = Path(config.out)
    folds = max((s.folds for s in specs if s.split == 'kfold'), default=0)
    runs = []
    for fold in range(max(folds, 1)):
        data = []
        for spec, dataset, tasks in opened:
            spec = dataclasses.replace(spec, fold=fold % spec.folds)
            split_path = Path(args.split_file) if args.split_file and \
                len(specs) == 1 else out / _split_name(spec)
            split = _load_split(split_path) if split_path.exists() else \
                make_run_split(spec, dataset)
            save_split(split, split_path)
            data.append(TaskData(spec.name, dataset, split, tasks,
                                 spec.weight))
        run_out = out / f'fold{fold}' if folds else out
        runs.append(finetune(data, dataclasses.replace(config,
                                                       out=str(run_out))))
        print_results(runs[-1])
    if folds:
        summary = summarize_folds(runs)
        (out / 'results.json').write_text(json.dumps(json_safe(summary), indent=2))
        print_results(summary)
    print(f'checkpoint(s) and results in {out}; TensorBoard: tensorboard '
          f'--logdir {out}')


def _load_split(path: Path):
    """The split saved in :obj:`path`, a user error if it is not one."""
    try:
        return load_split(path)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ConfigError(f'split file {path} cannot be read ({e}); delete '
                          f'it (a new split is then written) or give a '
                          f'.npz written by unimol2 finetune') from None


def _dropout_overrides(args: argparse.Namespace) -> dict:
    """Model dropout rates given on the command line (others: preset)."""
    overrides = {}
    if args.dropout is not None:
        overrides.update(dropout=args.dropout, attention_dropout=args.dropout)
    if args.pair_dropout is not None:
        overrides.update(pair_dropout=args.pair_dropout)
    return overrides


def _predict(args: argparse.Namespace) -> None:
    from .checkpoints import load_task_model
    from .train.inputs import (check_conformers, conformer_views,
                               read_molecules)
    from .train.predict import predict_molecules, write_predictions

    model = load_task_model(args.checkpoint)
    dataset = args.task_set or model.default_dataset
    if dataset not in model.groups:
        raise ConfigError(f"--task-set {dataset}: checkpoint "
                          f"{args.checkpoint} has no dataset '{dataset}' "
                          f"(it has {', '.join(model.groups)})")
    check_conformers(args.smiles, args.conformers)
    options = _input_options(args)
    inputs = read_molecules(args.smiles, smiles_col=args.smiles_col,
                            **options)
    molecules = conformer_views(inputs, args.conformers, **options) \
        if args.conformers != 1 else inputs.result.data
    preds = predict_molecules(model, molecules, dataset, args.batch_size,
                              args.device)
    report = write_predictions(args.out, inputs, preds, model, dataset)
    print(f'wrote {len(inputs.result.data)} predictions to {args.out}')
    for line in report:
        print(line)


def _input_options(args: argparse.Namespace) -> dict:
    """How ``predict`` / ``embed`` featurize their input file."""
    return dict(seed=args.seed, workers=args.workers,
                max_atoms=args.max_atoms, crop=args.crop)


def _embed(args: argparse.Namespace) -> None:
    from .train.embed import embed_molecules
    from .train.inputs import iter_molecules, write_input_report

    options = _input_options(args)
    chunks = iter_molecules(args.smiles, smiles_col=args.smiles_col,
                            chunk=4096, **options)
    report = embed_molecules(args.checkpoint, chunks, args.out,
                             batch_size=args.batch_size, device=args.device,
                             attrs=dict(input=str(args.smiles),
                                        seed=args.seed,
                                        max_atoms=args.max_atoms,
                                        crop=args.crop))
    print(f'wrote {len(report.result.indices)} molecules to {args.out}')
    for line in write_input_report(report, args.out):
        print(line)


def _build_hdf5(args: argparse.Namespace) -> None:
    from .data.store import build_geometry_store, build_store

    common = dict(workers=args.workers, shard_size=args.shard_size,
                  chunksize=args.chunksize, time_limit=args.time_limit or None,
                  scheduler=args.scheduler, progress=not args.no_progress)
    options = {k: v for k, v in (('level', args.level),
                                 ('split', args.split)) if v is not None}
    if args.format is None:
        if options or args.perceive_bonds:
            raise ConfigError('--level, --split and --perceive-bonds apply to '
                              'structure files: give --format too')
        build_store(args.inputs, args.out_dir, seed=args.seed,
                    limit=args.limit, max_atoms=args.max_atoms,
                    optimize=not args.no_optimize, **common)
        return
    if args.seed or args.limit is not None or args.no_optimize:
        raise ConfigError('--seed, --limit and --no-optimize apply to SMILES '
                          'files, not to --format structures')
    build_geometry_store(args.inputs, args.out_dir,
                         format=None if args.format == 'auto' else args.format,
                         options=options, perceive_bonds=args.perceive_bonds,
                         max_atoms=args.max_atoms, **common)


def _scaling_fit(args: argparse.Namespace) -> None:
    from .pretrain.scaling import scaling_fit

    report = scaling_fit(args.runs, args.predict, skip_steps=args.skip_steps,
                         eval_last_steps=args.eval_last_steps,
                         metric=args.metric)
    print(report.table())
    record, png = report.write(args.out)
    print(f'wrote {record}' + (f' and {png}' if png else ''))


def _add_scaling_fit_parser(sub: argparse._SubParsersAction) -> None:
    sf = sub.add_parser(
        'scaling-fit', help='fit the scaling law of the validation loss '
        '(paper eq. 10) to pretraining runs and predict held-out ones',
        description='Fits L = a_m M^b_m + a_s S^b_s + a_c C^b_c (paper eq. '
        '10; C = M S, M in millions of parameters of the run\'s preset, S '
        'in steps) to the validation losses in the metrics.jsonl of the '
        'RUN_DIRs (unimol2 pretrain --out), predicts the --predict runs, '
        'prints the coefficients with standard errors and a Table 3-style '
        'table (RMAE, MSE, R-squared, Pearson r), and writes '
        'OUT/scaling_fit.json and OUT/scaling_fit.png (Fig. 4).')
    sf.add_argument('runs', nargs='+', metavar='RUN_DIR',
                    help='pretraining run directories to fit (two model '
                    'sizes or more), before --predict')
    sf.add_argument('--predict', nargs='+', default=[], metavar='RUN_DIR',
                    help='held-out run directories to predict')
    sf.add_argument('--skip-steps', type=int, default=0, metavar='S',
                    help='leave out the validations up to step S, the '
                    'transient (paper: 200000; default: 0)')
    sf.add_argument('--eval-last-steps', type=int, default=0, metavar='S',
                    help="metrics over each run's last S steps (paper: "
                    "100000; default: 0, every point after --skip-steps)")
    sf.add_argument('--metric', default='loss',
                    help='fit the validation entry valid_METRIC (default: '
                    'loss, the total; or atom, coord, dist)')
    sf.add_argument('--out', default='runs/scaling_fit', metavar='DIR',
                    help='output directory (default: runs/scaling_fit)')
    sf.set_defaults(func=_scaling_fit)


def _add_inference_arguments(parser: argparse.ArgumentParser,
                             out_help: str) -> None:
    """Options shared by ``predict`` and ``embed``."""
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--smiles', '--input', dest='smiles', required=True,
                        metavar='FILE',
                        help='molecules: .smi/.txt (one SMILES per line, '
                        'optionally followed by a name), .csv/.tsv, .sdf '
                        '(its conformers used as given, atoms in file '
                        'order) or .xyz/.extxyz (one or several frames, '
                        'coordinates as given); gzipped too')
    parser.add_argument('--smiles-col', default=None,
                        help='SMILES column of a table (default: "smiles" '
                        'in any case, else the first column)')
    parser.add_argument('--out', required=True, help=out_help)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--workers', type=int, default=None,
                        help='featurization processes (default: all cores)')
    parser.add_argument('--seed', type=int, default=0,
                        help='ETKDG seed of every generated conformer, and '
                        'seed of --crop')
    parser.add_argument('--max-atoms', type=int, default=256,
                        help='atom limit (heavy atoms; default: 256; '
                        'unimol_tools uses 128): larger molecules are '
                        'skipped and reported, or cropped with --crop')
    parser.add_argument('--crop', action='store_true',
                        help='crop molecules over --max-atoms to a seeded '
                        'random subset of their heavy atoms (as '
                        'unimol_tools) instead of skipping them; listed in '
                        'OUT.cropped.csv')
    parser.add_argument('--device', default='cpu')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='unimol2', description=__doc__)
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of a user error (a missing '
                        'file, a bad option ...) instead of one line')
    sub = parser.add_subparsers(dest='command', required=True)

    ft = sub.add_parser(
        'finetune', help='fine-tune on your labelled molecules or a '
        'benchmark dataset',
        description='Fine-tunes one model on one or several datasets: '
        'regression and classification tasks, sparse labels (empty cells), '
        'per-task metrics, best-validation checkpoint, test predictions. '
        'Rerunning the same command resumes an interrupted run.')
    src = ft.add_argument_group('data')
    src.add_argument('--data', action='append', default=None, metavar='FILE',
                     help='your file: .csv/.tsv (gzipped too) with a SMILES '
                     'column, .sdf (conformers used as given, labels from '
                     'SD properties) or .xyz (coordinates as given, labels '
                     'from key=value properties of each comment line)')
    src.add_argument('--smiles-col', default='smiles')
    src.add_argument('--dataset', default=None,
                     help='builtin: qm9, compas1d, b3db, moleculeace, '
                     'freesolv (comma-separated for a joint run)')
    src.add_argument('--targets', default=None,
                     help='COLUMN:KIND,... with KIND regression, '
                     'classification, multiclass or multilabel, e.g. '
                     '"BBB+/BBB-:classification,logBB:regression" (builtin '
                     'datasets: their names, e.g. homo,lumo,gap)')
    src.add_argument('--config', default=None, metavar='FILE',
                     help='.toml/.json with [train] settings and '
                     '[[datasets]] (see pyg_unimol2.datasets.specs)')
    src.add_argument('--root', default='data', help='dataset cache directory')
    src.add_argument('--csv', default=None, metavar='PATH',
                     help='the downloaded file of a builtin dataset '
                     '(COMPAS-1D CSV, B3DB TSV, MoleculeACE CSV, FreeSolv '
                     'CSV)')
    src.add_argument('--subset', type=int, default=None,
                     help='use a seeded random subset (QM9, COMPAS-1D)')
    src.add_argument('--max-atoms', type=int, default=256,
                     help='atom limit (heavy atoms; default: 256; '
                     'unimol_tools uses 128): larger molecules are skipped '
                     'and listed in the dataset\'s report (with --config: '
                     'max_atoms of each [[datasets]] entry)')
    src.add_argument('--split', choices=['random', 'scaffold',
                                         'scaffold_similarity', 'column',
                                         'kfold'], default='random')
    src.add_argument('--split-col', default=None,
                     help='column of --split column (train/valid/test)')
    src.add_argument('--folds', type=int, default=5,
                     help='folds of --split kfold (all are run)')
    src.add_argument('--split-file', default=None,
                     help='reuse (or write) the split in this .npz file')
    src.add_argument('--workers', type=int, default=None,
                     help='featurization processes (default: all cores)')
    ft.add_argument('--model', default='unimol2',
                    choices=['unimol2', 'fingerprint', 'schnet', 'dimenet++'],
                    help='Uni-Mol2, or a baseline in the same harness '
                    '(Morgan-fingerprint MLP, SchNet, DimeNet++)')
    ft.add_argument('--preset', default='small', choices=list(PRESETS),
                    help='model size of a fresh Uni-Mol2 (default: small)')
    ft.add_argument('--pretrained', default=None, metavar='CKPT',
                    help='start from this checkpoint (official, pretraining '
                    'or fine-tuning; its architecture wins over --preset), '
                    'hub:SIZE for the official weights (84M ... 1.1B), or '
                    'the name of weights shipped with the package '
                    '(small-moses)')
    ft.add_argument('--fresh-heads', action='store_true',
                    help='do not keep the pretrained heads of tasks with the '
                    'same name')
    ft.add_argument('--epochs', type=int, default=40)
    ft.add_argument('--max-steps', type=int, default=None)
    ft.add_argument('--max-minutes', type=float, default=None,
                    help='wall-clock training budget: stop (after a last '
                    'validation) when it is spent')
    ft.add_argument('--threads', type=int, default=None,
                    help='PyTorch CPU threads (1 is fastest for small '
                    'models on a busy machine)')
    ft.add_argument('--batch-size', type=int, default=32)
    ft.add_argument('--max-tokens', type=int, default=None,
                    help='padded-atom budget per batch (dynamic batching)')
    ft.add_argument('--max-pairs', type=int, default=None,
                    help='padded-pair budget per batch (dynamic batching)')
    ft.add_argument('--mix', choices=['proportional', 'uniform',
                                      'temperature'], default='temperature',
                    help='dataset sampling of a joint run')
    ft.add_argument('--temperature', type=float, default=2.0,
                    help='T of temperature sampling, p_d ~ n_d^(1/T)')
    ft.add_argument('--lr', type=float, default=1e-4)
    ft.add_argument('--warmup-ratio', type=float, default=0.06)
    ft.add_argument('--precision', choices=['fp32', 'bf16', 'fp16'],
                    default='fp32')
    ft.add_argument('--accumulation', type=int, default=1)
    ft.add_argument('--ckpt-every', type=int, default=None,
                    help='resume checkpoint every N steps (and every epoch)')
    ft.add_argument('--loss', choices=['smooth_l1', 'l1', 'mse'],
                    default=None, help='loss of the regression tasks '
                    '(default: smooth_l1; per task in --config)')
    ft.add_argument('--pooler-dropout', type=float, default=0.0)
    ft.add_argument('--dropout', type=float, default=None,
                    help='residual and attention dropout (default: 0.1 as '
                    'the official model)')
    ft.add_argument('--pair-dropout', type=float, default=None,
                    help='triangle-update dropout (default: 0.25)')
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
    ft.add_argument('--seed', type=int, default=0)
    ft.add_argument('--num-workers', type=int, default=None,
                    help='DataLoader worker processes that collate batches '
                    'ahead of the step (default: min(2, cores - 1); 0: the '
                    'main process collates)')
    ft.add_argument('--device', default='cpu')
    ft.add_argument('--out', default='runs/finetune')
    ft.set_defaults(func=_finetune)

    pr = sub.add_parser('predict', help='predict the tasks of a fine-tuned '
                        'checkpoint (probabilities for classification)')
    _add_inference_arguments(pr, out_help='output CSV')
    pr.add_argument('--conformers', type=int, default=1, metavar='K',
                    help='average the predictions over K generated '
                    'conformers (ETKDG seeds SEED, SEED+1, ...; 1 is '
                    'skipped after 0, which RDKit takes as 1), as '
                    'fine-tuning evaluation does; SMILES inputs only (SD / '
                    'XYZ files give their own geometry)')
    pr.add_argument('--task-set', default=None, metavar='DATASET',
                    help='which dataset\'s heads of a joint run (default: '
                    'the first)')
    pr.set_defaults(func=_predict)

    em = sub.add_parser(
        'embed', help='molecule and atom representations to HDF5',
        description='Writes the CLS and per-atom representations of a '
        'checkpoint (ours or an official Uni-Mol2 one) for every molecule of '
        'a SMILES, table, SD or XYZ file to an HDF5 file; bad molecules are '
        'skipped and listed in OUT.failures.csv.')
    _add_inference_arguments(em, out_help='output .h5 file')
    em.set_defaults(func=_embed)

    add_pretrain_parser(sub)

    bh = sub.add_parser(
        'build-hdf5', help='featurize SMILES files, or structures with '
        'energies and forces (--format), into a sharded HDF5 store',
        description='Embeds one conformer per molecule (ETKDGv3 + MMFF94) '
        'in parallel and writes a sharded HDF5 store with a manifest and a '
        'failure report; with --format, stores the given structures with '
        'their energies, forces and charges instead. Rerunning resumes an '
        'interrupted build; a complete store is left untouched.')
    bh.add_argument('inputs', nargs='+', metavar='INPUT',
                    help='.smi, .csv or .tsv files, optionally gzipped; with '
                    '--format, structure files')
    bh.add_argument('out_dir', metavar='OUT_DIR', help='store directory')
    bh.add_argument('--format', default=None,
                    choices=['auto', *STRUCTURE_FORMATS],
                    help='the inputs are structures of this dataset format '
                    '(auto: from the file names)')
    bh.add_argument('--level', default=None,
                    help='ANI-1x level of theory (default: wb97x_dz)')
    bh.add_argument('--split', default=None,
                    help='Transition-1x group: data (default), train, val '
                    'or test')
    bh.add_argument('--perceive-bonds', action='store_true',
                    help='structures: perceive bonds instead of dropping the '
                    'graph features')
    bh.add_argument('--workers', type=int, default=None,
                    help='featurization processes (default: all cores; 1 '
                    'for structures without --perceive-bonds)')
    bh.add_argument('--shard-size', type=int, default=10000,
                    help='input records per shard (default: 10000)')
    bh.add_argument('--seed', type=int, default=0,
                    help='ETKDG seed of every molecule (default: 0)')
    bh.add_argument('--limit', type=int, default=None,
                    help='use only the first LIMIT input records')
    bh.add_argument('--max-atoms', type=int, default=256,
                    help='skip molecules with more heavy atoms, or '
                    'structures with more atoms (max 256)')
    bh.add_argument('--no-optimize', action='store_true',
                    help='skip the MMFF94 optimization')
    bh.add_argument('--chunksize', type=int, default=8,
                    help='molecules sent to a worker at once (default: 8)')
    bh.add_argument('--time-limit', type=float, default=300, metavar='S',
                    help='seconds one molecule may take before it is skipped '
                    'as a failure (default: 300; 0: no limit)')
    bh.add_argument('--scheduler', default=None, metavar='ADDRESS',
                    help='featurize on the Dask cluster of this scheduler '
                    '(tcp://HOST:8786), one task per shard, to the same '
                    'store; its workers must see OUT_DIR at the same path '
                    '(a shared filesystem) and run the same versions of '
                    'pyg_unimol2, RDKit, NumPy, h5py and Python')
    bh.add_argument('--no-progress', action='store_true',
                    help='no progress bar')
    bh.set_defaults(func=_build_hdf5)

    _add_scaling_fit_parser(sub)
    for command in sub.choices.values():  # --debug after the command too
        command.add_argument('--debug', action='store_true',
                             default=argparse.SUPPRESS,
                             help='show the traceback of a user error')
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Runs a command. A user error (a missing or unreadable file, a corrupt
    checkpoint or store, a bad option or config key) prints one line,
    ``unimol2: error: ...``, and exits with status 2 (as argparse's own
    errors); ``--debug`` shows its traceback instead. Other exceptions (bugs)
    keep their traceback."""
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.func(args), debug=args.debug)


if __name__ == '__main__':
    main(sys.argv[1:])
