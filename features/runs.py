"""Run folders and the one results table every script appends to.

Layout under the outputs folder (default ``runs/``)::

    runs/results.jsonl                 one JSON object per run (the report reads only this)
    runs/<time>-<dataset>-<backbone>-<method>/   a run folder: config.json, metrics.json, ...

A run folder is built under a hidden temporary name and renamed when everything in it is
written, so a folder under its final name is complete; its final name is claimed first
(an exclusive ``mkdir``), so runs started in the same second never collide. Rows are
appended whole under the table's lock: a write the disk cuts short is undone and the run
fails with the disk-full message, so a row is in the table entirely or not at all. A
table damaged by other means is read up to its damage, with a warning naming the line.

Output files the user names (:func:`write_output`) are written to a temporary name and
renamed, except where the path is not a regular file (``/dev/stdout``, a FIFO, a link to
either): there the text is written through, and the device stays a device.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

from .errors import DiskFullError, UsageError

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class RunFolder:
    """Where a run writes (``path``, temporary) and where it ends up (``final``)."""

    def __init__(self, path: Path, final: Path):
        self.path, self.final = path, final


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a run's temporary names carry its pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


_ABANDONED = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?:partial|tmp)$")


def remove_abandoned(folder, pattern: re.Pattern = _ABANDONED) -> list[Path]:
    """Remove the temporary files and folders that runs killed mid-way left in ``folder``.

    A temporary name is ``.<name>.<pid>.partial`` or ``.<name>.<pid>.tmp`` (or what
    ``pattern`` matches, with groups ``name`` and ``pid``); it is provably abandoned when
    no process with that pid runs any more (a run's own, or a concurrent live run's, are
    left alone). The empty folder a killed run had claimed as its final name goes with its
    ``.partial``. Each removal is logged.

    Returns:
        What was removed.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or pid_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            claim = folder / match["name"]
            try:
                claim.rmdir()  # only when empty: the claim of the killed run
            except OSError:
                pass
        else:
            try:
                entry.unlink()
            except OSError:
                continue
        log.warning("removed %s, left by process %s, which is gone (killed or crashed)", entry, match["pid"])
        removed.append(entry)
    return removed


def _claim(out_dir: Path, stem: str) -> Path:
    """Create ``out_dir/stem`` (or ``stem-2``, ``stem-3``, ...) exclusively and return it."""
    n = 1
    while True:
        final = out_dir / (stem if n == 1 else f"{stem}-{n}")
        try:
            final.mkdir()
            return final
        except FileExistsError:
            n += 1


@contextmanager
def run_folder(out_dir, *parts: str):
    """Yield a :class:`RunFolder`; on success ``path`` is renamed to ``final``,
    ``out_dir/<time>-<parts>``. On an error the temporary folder is removed.

    The final name is claimed at the start with an exclusive ``mkdir`` (an empty folder,
    replaced by the finished one), so two runs never pick the same name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out_dir)
    stem = "-".join([_now().strftime("%Y%m%d-%H%M%S"), *(p.replace("/", "_") for p in parts if p)])
    final = _claim(out_dir, stem)
    tmp = out_dir / f".{final.name}.{os.getpid()}.partial"
    done = False
    try:
        tmp.mkdir()
        yield RunFolder(tmp, final)
        os.replace(tmp, final)  # over the empty claimed folder
        done = True
    finally:
        if not done:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                final.rmdir()  # the claim, still empty
            except OSError:
                pass


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
            _write_all(fd, b"\0" * 4096)
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


def write_json(path, obj) -> None:
    """Write JSON under a temporary name, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may take fewer than it is given)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def append_result(out_dir, row: dict) -> Path:
    """Append one row (with the time) to the results table and return its path.

    The row is written whole or not at all: under the table's lock, a write cut short
    (a full disk) is truncated away again before the error is raised.

    Raises:
        DiskFullError: the disk is full; the table is as it was.
    """
    path = Path(out_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": _now().isoformat(timespec="seconds"), **row}, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one appender at a time, so an undo cuts only its own bytes
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, line.encode())
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no space left on the device while adding this run's row to {path}; "
                                    "the table is as it was. Free some space and run again") from None
            raise
    finally:
        os.close(fd)
    return path


def read_results(out_dir) -> list[dict]:
    """Every row of the results table, oldest first (empty if there is none).

    A line that is not a whole JSON object (a table damaged by hand, or by a run from
    before rows were appended whole) is left out with a warning naming it.
    """
    path = Path(out_dir) / RESULTS_FILE
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                log.warning("%s line %d is damaged (not one JSON row); it is left out", path, number)
                continue
            rows.append(row)
    return rows


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
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            write(f)
        return path
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():
        raise UsageError(f"{{{param}}} {path}: the folder {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            write(f)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
