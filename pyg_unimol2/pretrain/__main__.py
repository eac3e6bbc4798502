"""``python -m pyg_unimol2.pretrain`` and
``torchrun ... -m pyg_unimol2.pretrain``.

``kill -USR1`` on a rank prints the stack of every thread of that rank to
its stderr: where a stuck rank waits. A user error (a bad setting, a
missing or corrupt store) prints one line, ``unimol2: error: ...``, on
every rank that meets it and exits with status 2; ``--debug`` shows the
traceback instead.
"""
import faulthandler
import signal

from ..errors import run_cli
from .cli import build_parser, main

if __name__ == '__main__':
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    args = build_parser().parse_args()
    run_cli(lambda: main(args), debug=args.debug)
