"""The exceptions fedsim raises for a user's mistake, each with a one-line message that names the
field or file and what was expected. The CLI prints the message and exits 2; library callers can
catch `FedsimError` (or one of its kinds) and show the same line."""

from __future__ import annotations


class FedsimError(Exception):
    """A problem with what the user asked for (config, data, cluster), not a bug in fedsim."""


class ConfigError(FedsimError, ValueError):
    """A configuration problem, phrased as one line that names the field."""


class DataError(FedsimError, ValueError):
    """Bad data or bad data arguments (a ValueError, so callers guarding against it keep working)."""


class ClusterError(FedsimError, RuntimeError):
    """The cluster cannot host the requested workers (said in one line, before anything waits)."""
