r"""The base class of every error caused by what a user gave the library.

A :class:`UserError` is a mistake in the input (a file, a SMILES string, a
setting, a checkpoint or a store), not a bug: its message names the thing and
says what to do, and the command line prints that one line instead of a
traceback (``--debug`` shows the traceback). Every other exception is a bug
and keeps its traceback.

The subclasses also derive from the built-in exception that the same mistake
raised before (``ValueError``, ``FileNotFoundError``), so code that caught
those keeps working.
"""
import errno
import sys
from typing import Callable, Optional

__all__ = ['UserError', 'ConfigError', 'InputError', 'MissingFileError',
           'user_error_message', 'run_cli', 'EXIT_USER_ERROR']

#: Exit status of the command line after a user error (as argparse's own
#: errors: an unknown option, a missing argument, an invalid choice).
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input; the message names it."""


class ConfigError(UserError, ValueError):
    """A setting that does not exist or does not fit: an unknown key of a
    config file, a bad combination of options, an unknown preset or builtin
    dataset, a value out of range."""


class InputError(UserError, ValueError):
    """An input file whose content is not what it should be (not a table,
    empty, no usable molecule, an unknown split value ...)."""


class MissingFileError(UserError, FileNotFoundError):
    """An input file (or directory) that does not exist."""


_OS_HINTS = {
    errno.ENOENT: 'check the path',
    errno.EACCES: 'check its permissions',
    errno.EPERM: 'check its permissions',
    errno.EISDIR: 'give a file, not a directory',
    errno.ENOTDIR: 'a part of the path is not a directory',
    errno.ENOSPC: 'free some disk space',
}


def user_error_message(exc: BaseException) -> Optional[str]:
    """The message the command line prints for :obj:`exc`: that of a
    :class:`UserError`, or of an ``OSError`` about a named file (missing,
    unreadable, a directory ...); :obj:`None` for anything else (a bug)."""
    if isinstance(exc, UserError):
        # KeyError-like mixins quote str(); the message is the first arg.
        if len(exc.args) == 1 and isinstance(exc.args[0], str):
            return exc.args[0]
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        what = exc.strerror or str(exc)
        what = what[:1].lower() + what[1:]
        hint = _OS_HINTS.get(exc.errno, 'check the path')
        return f'{exc.filename}: {what} ({hint})'
    return None


def run_cli(func: Callable[[], None], debug: bool = False,
            prog: str = 'unimol2') -> None:
    r"""Runs :obj:`func` (a command) the way the command line does: a user
    error (:func:`user_error_message`) prints one line,
    ``PROG: error: MESSAGE``, to stderr and exits with
    :data:`EXIT_USER_ERROR`; with :obj:`debug` (``--debug``) and for every
    other exception the traceback is shown."""
    try:
        func()
    except Exception as e:
        message = None if debug else user_error_message(e)
        if message is None:
            raise
        sys.stdout.flush()
        print(f'{prog}: error: {message}', file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
