"""Exceptions that the command line reports as one-line errors instead of tracebacks."""

from __future__ import annotations

import os

__all__ = ["CxrlibError", "user_errors"]


class CxrlibError(Exception):
    """Base class for errors about the user's input (files, folders, parameters)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Return the exception types the CLI turns into ``cxrlib CMD: error: ...`` lines.

    Set the environment variable ``CXRLIB_DEBUG=1`` to get full tracebacks instead.

    Returns
    -------
    tuple of type
        Exception classes caught by :func:`cxrlib.cli.main`.
    """
    if os.environ.get("CXRLIB_DEBUG"):
        return ()
    return (CxrlibError, ValueError, OSError, LookupError)
