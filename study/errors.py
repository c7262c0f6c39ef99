"""The exceptions nfstudy raises for bad input.

Every user-facing problem (a typo in a key, an impossible value, a missing data set, an
unreachable server) is an :class:`NfstudyError`. The CLI prints its message as one line and
exits with code 2; ``--debug`` shows the traceback. Internal invariants use ``assert``.
"""

import difflib
from collections.abc import Iterable


class NfstudyError(Exception):
    """Base class: a problem with what the user asked for, not a bug."""


class ConfigError(NfstudyError):
    """A study file, preset, ``--set`` override or run configuration is invalid."""


class DataError(NfstudyError):
    """A data set cannot be found or read."""


class TrackingError(NfstudyError):
    """The MLflow tracking store or the Optuna storage cannot be used."""


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the closest of ``known`` to a misspelt ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
