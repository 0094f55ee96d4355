"""The exceptions of histo_utils: one root, :class:`HistoUtilsError`, under which every refusal sits.

A caller catches "the project refused this input or this state" in one place::

    try:
        run_profile(...)
    except HistoUtilsError as err:
        ...

Each class also derives from the built-in exception a Python programmer would expect at that place
(``ValueError`` for a bad value, ``FileNotFoundError`` for a missing file, ...), so ``except ValueError``
written before this module existed keeps working. Messages follow one convention: they name the input
(parameter, file, column) and say how to fix it, e.g. "Level 3 not available. Number of available
levels: 1".

The one exception of the package *not* under the root is :class:`histo_utils.run.RunInterrupted`, a
signal (SIGTERM, SIGINT) turned into an exception: like ``KeyboardInterrupt`` it derives from
``BaseException`` so that no ``except Exception`` swallows it. It is not a refusal.

This module imports nothing of the package: every layer may import it.
"""

from __future__ import annotations

__all__ = ["HistoUtilsError", "InputError", "MissingInputError", "InputKeyError", "InputIndexError", "InputTypeError",
           "StateError", "OutputExistsError", "InputPermissionError",
           "SchedulerUnreachable"]


class HistoUtilsError(Exception):
    """Root of every refusal of histo_utils: bad input, missing input, or a state it cannot work in."""


class InputError(HistoUtilsError, ValueError):
    """A value, parameter, table or file content that the method cannot use as given."""


class MissingInputError(HistoUtilsError, FileNotFoundError):
    """A file or folder the method needs is not there."""


class InputKeyError(HistoUtilsError, KeyError):
    """A name asked for (gene, trait, feature table, gene set) is not in the input."""


class InputIndexError(HistoUtilsError, IndexError):
    """A position outside the input (e.g. a gene-set index beyond the genes of the table)."""


class InputTypeError(HistoUtilsError, TypeError):
    """An argument of the wrong kind (e.g. a list where a DataFrame is needed)."""


class StateError(HistoUtilsError, RuntimeError):
    """The run is in a state that forbids the step (output locked, a forward pass without output, ...)."""


class OutputExistsError(HistoUtilsError, FileExistsError):
    """An output folder already holds results made with other parameters."""


class InputPermissionError(HistoUtilsError, PermissionError):
    """An input folder or file that exists but cannot be read (permissions)."""


class SchedulerUnreachable(HistoUtilsError, ConnectionError):
    """The Dask scheduler given as ``scheduler`` does not answer."""
