"""``python -m pyg_unimol2.pretrain`` and
``torchrun ... -m pyg_unimol2.pretrain``.

``kill -USR1`` on a rank prints the stack of every thread of that rank to
its stderr: where a stuck rank waits.
"""
import faulthandler
import signal

from .cli import build_parser, main

if __name__ == '__main__':
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    main(build_parser().parse_args())
