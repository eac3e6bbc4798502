r"""The base class of every error caused by what a user gave the library.

A :class:`UserError` is a mistake in the input (a file, a SMILES string, a
setting, a checkpoint or a store), not a bug: its message names the thing and
says what to do, and the command line prints that one line instead of a
traceback (``--debug`` shows the traceback). Every other exception is a bug
and keeps its traceback.
"""

__all__ = ['UserError']


class UserError(Exception):
    """A mistake in the user's input; the message names it."""
