"""Errors a user can fix. Scripts print their message and exit with code 2.

The library speaks in its callers' terms: a message names a parameter as ``{name}`` (or
``{name=value}`` for a setting such as ``{force=True}``), and the placeholder is
rendered for whoever reads it. ``str(error)`` gives the Python parameter
(``image_size 16: ...``, ``run again with force=True``), what an API user (the notebook)
typed; the command line renders the same error with its flags (``--image-size 16: ...``,
``run again with --force``), see :meth:`ToolkitError.render`.
"""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)(?:=([^{}\s]*))?\}")


class ToolkitError(Exception):
    """Bad input or an unavailable resource: a message for the user, no traceback."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.template = message

    def render(self, flag=None) -> str:
        """The message with each ``{param}`` rendered by ``flag(name, value)``.

        Args:
            flag: maps a parameter name and its value (None for a bare ``{name}``) to the
                words the reader knows; None renders the Python parameter names.
        """
        def replace(match):
            name, value = match.group(1), match.group(2)
            if flag is not None:
                return flag(name, value)
            return name if value is None else f"{name}={value}"

        return _PLACEHOLDER.sub(replace, self.template)

    def __str__(self) -> str:
        return self.render()


class UsageError(ToolkitError):
    """A parameter or argument cannot be used as given."""


class WeightsUnavailableError(ToolkitError):
    """Pretrained weights cannot be had (no network, missing package or file)."""


class DatasetUnavailableError(ToolkitError):
    """A dataset cannot be loaded (no network, missing or empty folder)."""


class CacheError(ToolkitError):
    """A feature cache is missing, incomplete or does not match what was asked."""


class DiskFullError(ToolkitError):
    """The disk filled up while writing; what was complete is kept."""


def disk_full_path(exc: BaseException) -> str | None:
    """The file a disk-full error was writing, where the error says (HDF5 says it in its text)."""
    if getattr(exc, "filename", None):
        return str(exc.filename)
    match = re.search(r"filename = '([^']*)'", str(exc))
    return match.group(1) if match else None


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" (or over quota), however the library words it."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "errno = 28" in str(exc)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line, shortened: a library's message can run to a kilobyte of lines (a literal
    backslash-n, as some write it in a repr, counts as a line break)."""
    text = str(exc).strip().replace("\\n", "\n")
    return (text.splitlines() or [type(exc).__name__])[0][:limit]
