"""The places the user names to write to: a folder checked before any work is done for it, and an output
file written whole or not at all.

Output files the user names (:func:`write_output`) are written as every file is
(:func:`features.io.atomic_write`), except where the path is not a regular file (``/dev/stdout``,
a FIFO, a link to either): there the text is written through, and the device stays a device.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import DiskFullError, UsageError
from .io import atomic_write, write_all


def check_output_folder(folder, param: str = "out") -> Path:
    """Make sure ``folder`` exists and takes a file, before any work is done for it.

    A read-only mount, a file in the folder's place or a full device is found here, in a
    second, not after a fit of minutes.

    Raises:
        UsageError: the path is a file, or the folder cannot be created or written.
        DiskFullError: the folder's device is full.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{{{param}}} {folder}: is a file, not a folder; give a folder")
    probe = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check.{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"no space left on the device of {folder}; free some space first") from None
        raise UsageError(f"{{{param}}} {folder}: cannot write there ({exc.strerror or exc}); "
                         "give a folder you can write to") from None
    finally:
        if probe is not None:
            try:
                probe.unlink()
            except OSError:
                pass
    return folder


def check_output_file(path, param: str = "out") -> os.stat_result | None:
    """Refuse a folder where a file is to be written; return the path's status (None: not there yet).

    Raises:
        UsageError: the path is a folder.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{{{param}}} {path}: is a folder; give a file name")
    return st


def write_output(path, write, param: str = "out") -> Path:
    """Write a file the user named, without ever leaving it half-written or replacing a device.

    Args:
        write: ``write(f)`` writes the content to the open text file ``f``.
        param: the parameter that named ``path``, for the messages.

    A regular file (or a new name) is written under a temporary name beside it, then
    renamed (through a link, the file it points to is replaced and the link kept); a
    path that is not a regular file (``/dev/stdout``, ``/dev/null``, a FIFO) is written
    through; a folder is refused.

    Raises:
        UsageError: the path is a folder, or its folder does not exist.
    """
    path = Path(path)
    st = check_output_file(path, param)
    # surrogateescape: text from the command line that was not valid UTF-8 goes out as the bytes it came in as
    options = {"newline": "", "encoding": "utf-8", "errors": "surrogateescape"}
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(path, "w", **options) as f:
            write(f)
        return path
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():
        raise UsageError(f"{{{param}}} {path}: the folder {target.parent} does not exist")
    try:
        with atomic_write(target, **options) as f:
            write(f)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UsageError(f"{{{param}}} {path}: cannot write there ({exc.strerror or exc}); give a file in a "
                         "folder you can write to") from None
    return path
