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


class DiskFullError(ToolkitError):
    """The disk filled up while writing; what was complete is kept."""


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" (or over quota), however the library words it."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "errno = 28" in str(exc)
