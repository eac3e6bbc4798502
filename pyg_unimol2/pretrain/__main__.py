"""``python -m pyg_unimol2.pretrain`` and
``torchrun ... -m pyg_unimol2.pretrain``."""
from .cli import build_parser, main

if __name__ == '__main__':
    main(build_parser().parse_args())
