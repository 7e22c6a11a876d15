"""Writing a cache: the writers' lock, the checkpoints of a running extraction, the file itself.

See :mod:`features.cache.schema` for the format, the checkpoints and the lock.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..data.splits import SPLITS
from ..io import (
    DATA_LIMIT,
    RECORD_LIMIT,
    atomic_write,
    file_lock,
    read_regular,
    read_text,
    remove_abandoned,
    temporary_name,
    write_text,
)
from .schema import (
    ROW_DATASETS,
    SCHEMA_VERSION,
    RowsChecksum,
    attr_value,
    clean_attr,
    h5py_module,
    identity_checksum,
    write_skipped,
)

log = logging.getLogger(__name__)


def close_open_files() -> int:
    """Close every HDF5 file this process still has open; return how many.

    An error in the middle of a write (a full disk under Keras' checkpoint writer) can
    leave a file open; HDF5 then closes it at interpreter exit, where the failing close
    crashed the process (exit 139) after the error had been reported. Called when such
    an error is handled, so the process ends cleanly.
    """
    import gc
    import sys

    if "h5py" not in sys.modules:
        return 0
    h5py = sys.modules["h5py"]
    gc.collect()  # frames of the failed write may still hold File objects
    closed = 0
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            fid._close_open_objects(h5py.h5f.OBJ_LOCAL | ~h5py.h5f.OBJ_FILE)
            fid._close_open_objects(h5py.h5f.OBJ_LOCAL | h5py.h5f.OBJ_FILE)
            closed += 1
        except Exception:  # noqa: BLE001 - a close that fails on a full disk has still released the file
            closed += 1
    return closed


@contextmanager
def writer_lock(path, wait_message: bool = True):
    """Hold the lock on a cache's ``.lock`` file; a second writer waits for the first.

    The lock is the operating system's (``flock``): a killed holder releases it at once.
    The holder deletes the lock file when it is done, so none outlives its run; a writer
    that waited on a file deleted meanwhile finds that out and locks the new one. The
    holder also removes the ``.partial`` cache files of writers that were killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def waiting(holder):
        if wait_message:
            log.warning("%s is being written by another run (pid %s); waiting for it to finish", path, holder)

    with file_lock(path.with_name(path.name + ".lock"), on_wait=waiting):
        # Cache files of writers that were killed (CacheWriter's ``<cache>.<pid>.partial``).
        remove_abandoned(path.parent, re.compile(rf"^(?P<name>{re.escape(path.name)})\.(?P<pid>\d+)\.partial$"))
        yield


def _load_part(path):
    """A checkpoint's part (``rows-*.npz``), read by the guarded reader."""
    return np.load(io.BytesIO(read_regular(path, DATA_LIMIT)), allow_pickle=False)


def _read_key(path) -> str | None:
    """A checkpoint folder's key.json as written, or None where it is missing or unreadable (then it starts over)."""
    try:
        return read_text(path, RECORD_LIMIT)
    except (OSError, UnicodeDecodeError):
        return None


class Checkpoints:
    """The rows an extraction has finished, kept in ``<cache>.parts/`` until the cache is whole.

    Args:
        path: the cache's final path.
        key: the settings the rows are made with; parts made with others are discarded.
    """

    def __init__(self, path, key: dict):
        self.dir = Path(str(path) + ".parts")
        self.key = json.dumps({k: attr_value(v) for k, v in key.items()}, sort_keys=True)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def resume(self) -> tuple[int, int]:
        """Keep the parts made with this key, readable and in order; drop the rest.

        Returns:
            (rows kept, the last listing index they cover, or -1).
        """
        key_file = self.dir / "key.json"
        if _read_key(key_file) != self.key:
            self.clear()
            self.dir.mkdir(parents=True)
            write_text(key_file, self.key)
            return 0, -1
        rows, last, good = 0, -1, True
        for part in self._files():
            if good:
                try:
                    with _load_part(part) as data:
                        index = data["index"]
                        ok = len(index) == len(data["embeddings"]) and len(index) and index[0] > last
                except (OSError, ValueError, KeyError, EOFError):
                    ok = False
                if ok:
                    rows, last = rows + len(index), int(index[-1])
                    continue
                good = False  # everything after a bad part is redone
            part.unlink()
        for stray in self.dir.glob(".*.tmp"):
            stray.unlink()
        return rows, last

    def _files(self) -> list[Path]:
        return sorted(self.dir.glob("rows-*.npz"))

    def write(self, index, embeddings) -> None:
        """Add one part: rows ``index`` (ascending, after every earlier part's)."""
        index = np.asarray(index, dtype=np.int64)
        final = self.dir / f"rows-{int(index[0]):012d}.npz"
        with atomic_write(final, "wb") as f:
            np.savez(f, index=index, embeddings=np.asarray(embeddings, dtype=np.float32))

    def parts(self):
        """(index, embeddings) of each part, in listing order."""
        for part in self._files():
            with _load_part(part) as data:
                yield data["index"], data["embeddings"]


class CacheWriter:
    """Streams rows into a new cache file; renames it into place on :meth:`finish`.

    Use as a context manager: leaving the block without ``finish`` (an error, Ctrl-C)
    deletes the temporary file, so nothing half-written is left under any name.
    """

    def __init__(self, path, dim: int, class_names, chunk_rows: int = 256):
        self.path = Path(path)
        self.dim, self.class_names, self.chunk_rows = int(dim), list(class_names), chunk_rows
        self.tmp_path = temporary_name(self.path, "partial", hidden=False)  # the lock's holder cleans these
        self._file = None
        self._rows = 0
        self._sha = hashlib.sha256()
        self._rows_sha = RowsChecksum()

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._create()
        except BaseException:  # a full disk while creating: no .partial file is left behind
            self.__exit__(None, None, None)
            raise
        return self

    def _create(self) -> None:
        h5py = h5py_module()
        f = self._file = h5py.File(self.tmp_path, "w")
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["complete"] = False
        str_t = h5py.string_dtype()
        f.create_dataset("embeddings", (0, self.dim), np.float32, maxshape=(None, self.dim),
                         chunks=(self.chunk_rows, self.dim))
        for name, dtype in (("labels", np.int64), ("ids", str_t), ("index", np.int64), ("splits", np.uint8)):
            f.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(self.chunk_rows * 4,))
        f["splits"].attrs["names"] = list(SPLITS)
        f.create_dataset("class_names", data=self.class_names, dtype=str_t)

    def append(self, embeddings, labels, *, ids, index, splits) -> None:
        """Append one batch of rows."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        n = len(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings of shape {embeddings.shape}, expected (n, {self.dim})")
        f = self._file
        for name, values in zip(ROW_DATASETS, (embeddings, labels, list(ids), index, splits)):
            ds = f[name]
            ds.resize(self._rows + n, axis=0)
            ds[self._rows:] = values
        self._sha.update(embeddings.tobytes())
        self._rows_sha.update(labels, ids, index=index, splits=splits)
        self._rows += n

    def finish(self, attrs: dict, skipped=()) -> Path:
        """Write the skipped list and attributes, mark complete, rename into place.

        Args:
            attrs: scalar (or JSON-able) attributes, see the module docstring.
            skipped: a :class:`~features.data.SkippedImage` for every image that could not be decoded.
        """
        f = self._file
        skipped = list(skipped)
        write_skipped(f, skipped)
        for key, value in attrs.items():
            f.attrs[key] = attr_value(value)
        f.attrs["n_images"] = self._rows
        f.attrs["n_skipped"] = len(skipped)
        f.attrs["embedding_dim"] = self.dim
        f.attrs["embeddings_sha256"] = self._sha.hexdigest()
        f.attrs["rows_sha256"] = self._rows_sha.hexdigest()
        f.attrs["identity_sha256"] = identity_checksum({k: clean_attr(v) for k, v in f.attrs.items()})
        f.attrs["complete"] = True
        f.flush()
        os.fsync(f.id.get_vfd_handle())
        f.close()
        self._file = None
        os.replace(self.tmp_path, self.path)
        return self.path

    def __exit__(self, exc_type, exc, tb):
        try:
            if self._file is not None:
                self._file.close()  # may fail itself on a full disk
        except Exception:  # noqa: BLE001 - the file is deleted below either way
            pass
        self._file = None
        if self.tmp_path.exists():
            self.tmp_path.unlink()
        return False


