"""Files written whole or not at all, read back guarded, checksums, locks.

Every file the toolkit writes goes through :func:`atomic_path` (or :func:`atomic_write`,
:func:`write_json` on top of it): the content goes to a temporary name in the same folder,
is flushed to the disk (fsync), and is renamed over the final name, so a file under its
final name is never half-written; on any failure the temporary file is removed. A killed
process cannot remove its own: its temporary names carry its pid, and
:func:`remove_abandoned` removes those whose process is gone.

What the user names to write to is :mod:`features.outputs`'s.

Every file the toolkit reads back (a record, a converted network, a preset's files, a file
it hashes; the photos too) goes through one guarded reader, :func:`read_regular`: opened
once without blocking (a FIFO never waits for a writer), checked on that descriptor to be a
regular file (a link to ``/dev/zero`` is a device), and read up to a bound that fits its
format (:data:`RECORD_LIMIT` for JSON records), never further than the size it had when
opened. What it refuses is a :class:`NotRegularFile` or a :class:`TooLarge`, both
``OSError``: where a reader already treats an unreadable file as missing or damaged, these
are too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def temporary_name(path, suffix: str = "tmp", hidden: bool = True) -> Path:
    """The temporary name beside ``path`` this process writes it under (``.<name>.<pid>.tmp``)."""
    path = Path(path)
    return path.with_name(f"{'.' if hidden else ''}{path.name}.{os.getpid()}.{suffix}")


def fsync_path(path) -> None:
    """Flush a file (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path, suffix: str = "tmp", hidden: bool = True):
    """Yield a temporary path beside ``path`` to write; then flush it and rename it to ``path``.

    The rename happens only when the block ends without an error; on any error (a full
    disk, Ctrl-C) the temporary file is removed and ``path`` is as it was.

    Args:
        suffix, hidden: the temporary name's shape (see :func:`temporary_name`); the HDF5
            cache uses ``<name>.<pid>.partial``, which its writers' lock cleans up.
    """
    path = Path(path)
    tmp = temporary_name(path, suffix, hidden)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def atomic_write(path, mode: str = "w", **open_kwargs):
    """Open a temporary file beside ``path`` for writing; rename it to ``path`` when the block ends.

    Text modes default to UTF-8. See :func:`atomic_path`.
    """
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f


def write_json(path, obj) -> None:
    """Write JSON (indented, keys sorted) whole or not at all."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    with atomic_write(path) as f:
        f.write(text)


def write_text(path, text: str) -> None:
    """Write text whole or not at all."""
    with atomic_write(path) as f:
        f.write(text)


class Busy(Exception):
    """The lock is held by another process (its pid in ``holder``)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


@contextmanager
def file_lock(lock, on_wait=None, wait: bool = True):
    """Hold the operating system's lock (``flock``) on the file ``lock``; one holder at a time.

    A killed holder releases it at once. The holder writes its pid into the file and
    deletes the file when done, so none outlives its run; a waiter whose file was deleted
    meanwhile finds that out and locks the new one.

    Args:
        on_wait: called with the holder's pid (as written) before waiting for it.
        wait: False raises :class:`Busy` instead of waiting.
    """
    import fcntl

    lock = Path(lock)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                os.close(fd)
                raise Busy(holder) from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder we waited for deleted this file: lock the one there now
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        try:
            os.unlink(lock)  # while still holding it: a waiter re-checks the inode
        except OSError:
            pass
        os.close(fd)


def append_line(path, line: str, *, what: str) -> None:
    """Append ``line`` (ending in a newline) to the file at ``path``, whole or not at all.

    Under an ``flock`` of the file, one appender at a time: a write cut short (a full disk) is truncated away
    again before the error is raised, so an undo cuts only its own bytes.

    Raises:
        DiskFullError: the disk is full; the file is as it was (``what`` names it in the message).
    """
    import fcntl

    from .errors import DiskFullError

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        try:
            write_all(fd, line.encode())
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no space left on the device while adding {what} to {path}; "
                                    "it is as it was. Free some space and run again") from None
            raise
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may take fewer than it is given)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


RECORD_LIMIT = 1 << 20  # a JSON record the toolkit wrote: a few kilobytes; a megabyte is far past any
TABLE_LIMIT = 1 << 30  # a table the toolkit wrote (predictions.csv, results.jsonl): a row per image or run
DATA_LIMIT = 8 << 30  # arrays and models the toolkit wrote (a head, probabilities, a checkpoint's rows)


class NotRegularFile(OSError):
    """A path that is a device, a FIFO, a socket or a folder, found on the open descriptor."""


class TooLarge(OSError):
    """A file larger than its format can be."""


def what_it_is(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    return ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a folder"
            if stat.S_ISDIR(mode) else "a special file")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


@contextmanager
def regular_descriptor(path, limit: int | None = None):
    """Yield ``(fd, size)`` of ``path`` opened once for reading, without blocking, after ``fstat`` on that
    descriptor said it is a regular file of at most ``limit`` bytes (None: any size).

    Raises:
        NotRegularFile: a device, a FIFO, a socket or a folder (a link to one is followed).
        TooLarge: more than ``limit`` bytes.
        OSError: it cannot be opened.
    """
    name = os.fsdecode(path)
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file but {what_it_is(st.st_mode)}", name)
        if limit is not None and st.st_size > limit:
            raise TooLarge(errno.EFBIG, f"{_size(st.st_size)}, more than the {_size(limit)} it can be", name)
        yield fd, st.st_size
    finally:
        os.close(fd)


def _blocks(fd: int, size: int, block: int = 1 << 22):
    """The bytes of an open file up to ``size``, a block at a time (no further, if it grows meanwhile)."""
    left = size
    while left > 0:
        data = os.read(fd, min(left, block))
        if not data:
            return
        left -= len(data)
        yield data


def read_regular(path, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes: the guarded reader (see the module's docstring).

    Raises:
        NotRegularFile, TooLarge, OSError: as :func:`regular_descriptor`.
    """
    with regular_descriptor(path, limit) as (fd, size):
        return b"".join(_blocks(fd, size))


def check_regular(path, limit: int | None = None) -> int:
    """The size of ``path`` after the guarded reader's checks, for a file a library opens by its name (a Keras
    model, an HDF5 file): a device or a FIFO is refused before the library can block on it or read it without end.

    Raises:
        NotRegularFile, TooLarge, OSError: as :func:`regular_descriptor`.
    """
    with regular_descriptor(path, limit) as (_, size):
        return size


@contextmanager
def regular_file(path, limit: int | None = None):
    """``path`` opened by the guarded reader as a binary file object, for a library that reads a part of it (an
    image's header): never further than the size it had when opened."""
    with regular_descriptor(path, limit) as (fd, size):
        with open(fd, "rb", closefd=False) as f:
            yield f


def read_text(path, limit: int = RECORD_LIMIT, errors: str = "strict") -> str:
    """A UTF-8 text file of at most ``limit`` bytes, read by :func:`read_regular`.

    Raises:
        OSError: as :func:`read_regular`.
        UnicodeDecodeError: not UTF-8 (with ``errors="strict"``).
    """
    return read_regular(path, limit).decode("utf-8", errors)


def read_system_file(path, limit: int = RECORD_LIMIT) -> str:
    """A kernel's file (``/proc/cpuinfo``: regular, but of size 0 until read), up to ``limit`` bytes."""
    with regular_descriptor(path) as (fd, _):
        return b"".join(_blocks(fd, limit)).decode("utf-8", "replace")


def read_json(path, limit: int = RECORD_LIMIT):
    """A JSON file the toolkit wrote (a record: at most ``limit`` bytes), read by :func:`read_regular`.

    Raises:
        OSError: as :func:`read_regular`.
        ValueError: not UTF-8 JSON.
    """
    return json.loads(read_regular(path, limit).decode("utf-8"))


def file_sha256(path, limit: int | None = None) -> str:
    """The SHA-256 of a regular file (of at most ``limit`` bytes), read by the guarded reader a block at a time.

    Raises:
        NotRegularFile, TooLarge, OSError: as :func:`regular_descriptor`.
    """
    digest = hashlib.sha256()
    with regular_descriptor(path, limit) as (fd, size):
        for block in _blocks(fd, size):
            digest.update(block)
    return digest.hexdigest()


def tree_files(path) -> list[Path]:
    """A file itself, or every file under a folder, in order."""
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def tree_sha256(path) -> str:
    """The SHA-256 of a file, or of a folder's files (each one's relative name, then its bytes)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in tree_files(path):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with regular_descriptor(file) as (fd, size):
            for block in _blocks(fd, size):
                digest.update(block)
    return digest.hexdigest()


def tree_bytes(path) -> int:
    """The size on disk of a file, or of every file under a folder."""
    return sum(p.stat().st_size for p in tree_files(path))


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
