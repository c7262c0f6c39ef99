"""The exceptions nfstudy raises for bad input.

Every user-facing problem (a typo in a key, an impossible value, a missing data set, an
unreachable server) is an :class:`NfstudyError`. The CLI prints its message as one line and
exits with code 2; ``--debug`` shows the traceback. Internal invariants use ``assert``.
"""


class NfstudyError(Exception):
    """Base class: a problem with what the user asked for, not a bug."""


class ConfigError(NfstudyError):
    """A study file, preset, ``--set`` override or run configuration is invalid."""


class DataError(NfstudyError):
    """A data set cannot be found or read."""


class TrackingError(NfstudyError):
    """The MLflow tracking store or the Optuna storage cannot be used."""
