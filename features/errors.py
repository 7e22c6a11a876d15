"""Errors a user can fix. Scripts print their message and exit with code 2."""


class ToolkitError(Exception):
    """Bad input or an unavailable resource: a message for the user, no traceback."""

    exit_code = 2


class UsageError(ToolkitError):
    """A flag or argument cannot be used as given."""


class WeightsUnavailableError(ToolkitError):
    """Pretrained weights cannot be had (no network, missing package or file)."""


class DatasetUnavailableError(ToolkitError):
    """A dataset cannot be loaded (no network, missing or empty folder)."""


class CacheError(ToolkitError):
    """A feature cache is missing, incomplete or does not match what was asked."""
