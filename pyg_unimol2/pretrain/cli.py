"""The ``unimol2 pretrain`` subcommand (also ``python -m
pyg_unimol2.pretrain`` and ``torchrun ... -m pyg_unimol2.pretrain``)."""
import argparse
import os

from .config import add_arguments, config_from_args

__all__ = ['add_parser', 'main', 'build_parser']

DESCRIPTION = (
    'Pretrains Uni-Mol2 on a molecule store (unimol2 build-hdf5) with the '
    'masked-atom, coordinate and distance objectives. Settings come from '
    'the defaults (the paper), then --config, then the flags. Launch with '
    'torchrun for DDP (NCCL on GPU, gloo on CPU), e.g. torchrun '
    '--nproc_per_node=2 -m pyg_unimol2.pretrain --store STORE; add --fsdp '
    'to shard the model over the ranks (FSDP2) instead. Rerunning with the '
    'same --out resumes from its newest checkpoint.')


def add_parser(subparsers: argparse._SubParsersAction
               ) -> argparse.ArgumentParser:
    """Adds ``pretrain`` to :obj:`subparsers`, with ``func`` set to
    :func:`main`."""
    parser = subparsers.add_parser('pretrain', help='pretrain on a molecule '
                                   'store (DDP with torchrun)',
                                   description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> None:
    """Runs :func:`~pyg_unimol2.pretrain.trainer.pretrain` with the settings
    of :obj:`args`; rank 0 prints the final losses."""
    from .trainer import pretrain

    config = config_from_args(args)
    result = pretrain(config)
    if int(os.environ.get('RANK', 0)) == 0:
        print(' '.join(f'{k}={v:.4g}' for k, v in result.items()))
        print(f'run directory: {config.out} (TensorBoard: tensorboard '
              f'--logdir {config.out}/tb)')


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser of ``python -m pyg_unimol2.pretrain``."""
    parser = argparse.ArgumentParser(prog='pyg_unimol2.pretrain',
                                     description=DESCRIPTION)
    add_arguments(parser)
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of a user error (a bad '
                        'setting, a missing store ...) instead of one line')
    return parser
