"""The HDF5 feature cache: the one module that opens it with h5py.

One file per (dataset, backbone, image size, pooling, weights, split), by default
``embeddings/<dataset>/<backbone>-<size>[-max][-random|-w<sha8>][-seed<S>][-split<a-b-c>]
[-max<K>per-class].h5`` (see :func:`cache_path`).

Schema (version 1)::

    /embeddings          float32 (N, D)  pooled embeddings, chunked, appended batch by batch
    /labels              int64 (N,)      label of each row, an index into /class_names
    /ids                 str (N,)        path relative to the source folder, or a TFDS id
    /index               int64 (N,)      the row's position in the source listing
    /splits              uint8 (N,)      0 train, 1 val, 2 test (attribute ``names``)
    /class_names         str (C,)
    /skipped/ids         str (K,)        images that could not be decoded ...
    /skipped/index       int64 (K,)      ... their position in the listing ...
    /skipped/reasons     str (K,)        ... and why
    /skipped/kinds       str (K,)        ... and the kind of reason (features.data.SKIP_KINDS;
                                         absent from caches written before it was added)
    attributes: schema_version, complete (True only once every row is written),
        embeddings_sha256 (of the embedding bytes in row order), dataset, source_kind,
        source, fingerprint (of the source listing), class_names, n_listed, n_images,
        n_skipped, backbone, weights, weights_sha256, image_size, pooling, preprocessing,
        resize_method, embedding_dim, seed, split (JSON train/val/test fractions),
        split_origin, max_per_class, batch_size, shard ("i/k"), seconds,
        images_per_second, created (UTC ISO time), versions (JSON).

Rows are the images that decoded, in listing order. Files are written under a temporary
name in the same folder and renamed when complete, so a file under its final name is
never half-written.

While an extraction runs, its rows are checkpointed in ``<cache>.parts/``: ``key.json``
(the settings) and ``rows-<first index>.npz`` files (``index`` int64 (n,), ``embeddings``
float32 (n, D)), each a whole number of batches, each written under a temporary name and
renamed. An interrupted extraction (Ctrl-C, ``kill -9``, a full disk) leaves them; the
same command resumes after the last one and deletes the folder once the cache is whole.
``<cache>.lock`` is the writers' lock: one extraction per cache at a time. A dataset split across workers is written as shard files (each holds
the rows of its own slice of the listing) and :func:`merge_shards` joins them as one file
of HDF5 virtual datasets, without copying the embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.splits import DEFAULT_SPLIT, SPLITS, split_code
from .errors import CacheError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_ROW_DATASETS = ("embeddings", "labels", "ids", "index", "splits")


def cache_path(out_dir, dataset: str, backbone: str, image_size: int, pooling: str = "avg",
               weights: str = "imagenet", weights_sha256: str | None = None, seed: int = 0,
               split=DEFAULT_SPLIT, max_per_class: int | None = None, tta: str = "none") -> Path:
    """Where the cache for this key lives; defaults leave the name short."""
    name = f"{backbone}-{image_size}"
    if pooling != "avg":
        name += f"-{pooling}"
    if tta != "none":
        name += f"-tta{tta}"
    if weights == "none":
        name += "-random"
    elif weights != "imagenet":
        name += f"-w{(weights_sha256 or 'file')[:8]}"
    if seed != 0:
        name += f"-seed{seed}"
    if not np.allclose(split, DEFAULT_SPLIT):
        name += "-split" + "-".join(f"{round(f * 100):d}" for f in split)
    if max_per_class:
        name += f"-max{max_per_class}per-class"
    return Path(out_dir) / dataset / f"{name}.h5"


def _h5py():
    import h5py

    return h5py


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
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if wait_message:
                log.warning("%s is being written by another run (pid %s); waiting for it to finish", path, holder)
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
        from .runs import remove_abandoned

        # Cache files of writers that were killed (CacheWriter's ``<cache>.<pid>.partial``).
        remove_abandoned(path.parent, re.compile(rf"^(?P<name>{re.escape(path.name)})\.(?P<pid>\d+)\.partial$"))
        yield
    finally:
        try:
            os.unlink(lock)  # while still holding it: a waiter re-checks the inode
        except OSError:
            pass
        os.close(fd)


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
        if not key_file.is_file() or key_file.read_text() != self.key:
            self.clear()
            self.dir.mkdir(parents=True)
            tmp = key_file.with_name(f".key.{os.getpid()}.tmp")
            tmp.write_text(self.key)
            os.replace(tmp, key_file)
            return 0, -1
        rows, last, good = 0, -1, True
        for part in self._files():
            if good:
                try:
                    with np.load(part) as data:
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
        tmp = self.dir / f".rows-{int(index[0]):012d}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, index=index, embeddings=np.asarray(embeddings, dtype=np.float32))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()

    def parts(self):
        """(index, embeddings) of each part, in listing order."""
        for part in self._files():
            with np.load(part) as data:
                yield data["index"], data["embeddings"]


class CacheWriter:
    """Streams rows into a new cache file; renames it into place on :meth:`finish`.

    Use as a context manager: leaving the block without ``finish`` (an error, Ctrl-C)
    deletes the temporary file, so nothing half-written is left under any name.
    """

    def __init__(self, path, dim: int, class_names, chunk_rows: int = 256):
        self.path = Path(path)
        self.dim, self.class_names, self.chunk_rows = int(dim), list(class_names), chunk_rows
        self.tmp_path = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        self._file = None
        self._rows = 0
        self._sha = hashlib.sha256()

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._create()
        except BaseException:  # a full disk while creating: no .partial file is left behind
            self.__exit__(None, None, None)
            raise
        return self

    def _create(self) -> None:
        h5py = _h5py()
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

    def append(self, embeddings, labels, ids, index, splits) -> None:
        """Append one batch of rows."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        n = len(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings of shape {embeddings.shape}, expected (n, {self.dim})")
        f = self._file
        for name, values in zip(_ROW_DATASETS, (embeddings, labels, list(ids), index, splits)):
            ds = f[name]
            ds.resize(self._rows + n, axis=0)
            ds[self._rows:] = values
        self._sha.update(embeddings.tobytes())
        self._rows += n

    def finish(self, attrs: dict, skipped=()) -> Path:
        """Write the skipped list and attributes, mark complete, rename into place.

        Args:
            attrs: scalar (or JSON-able) attributes, see the module docstring.
            skipped: (index, id, reason, kind) of every image that could not be decoded (the
                kind may be left out: it is then recorded as "").
        """
        h5py = _h5py()
        f = self._file
        group = f.create_group("skipped")
        skipped = list(skipped)
        group.create_dataset("index", data=np.asarray([s[0] for s in skipped], dtype=np.int64))
        group.create_dataset("ids", data=[s[1] for s in skipped], dtype=h5py.string_dtype())
        group.create_dataset("reasons", data=[s[2] for s in skipped], dtype=h5py.string_dtype())
        group.create_dataset("kinds", data=[s[3] if len(s) > 3 else "" for s in skipped],
                             dtype=h5py.string_dtype())
        for key, value in attrs.items():
            f.attrs[key] = attr_value(value)
        f.attrs["n_images"] = self._rows
        f.attrs["n_skipped"] = len(skipped)
        f.attrs["embedding_dim"] = self.dim
        f.attrs["embeddings_sha256"] = self._sha.hexdigest()
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


def attr_value(value):
    """How a Python value is stored as an HDF5 attribute (JSON for containers, "" for None)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return value


def _clean(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    return value


def read_attrs(path) -> dict:
    """The attributes of a cache, without loading any array.

    Raises:
        CacheError: missing file, not a cache, or not complete.
    """
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such feature cache; make it with extract.py")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _clean(v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise CacheError(f"{path}: not a readable HDF5 feature cache ({exc})") from None
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise CacheError(f"{path}: not a feature cache of schema version {SCHEMA_VERSION}")
    if not attrs.get("complete"):
        raise CacheError(f"{path}: the cache is incomplete (its extraction did not finish); "
                         "run the extraction again with {force=True}")
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise CacheError(f"{path}: the cache lacks the attribute(s) {', '.join(missing)}; it was not written "
                         "by extract.py or was edited: run the extraction again with {force=True}")
    return attrs


REQUIRED_ATTRS = ("n_images", "n_skipped", "embedding_dim", "embeddings_sha256", "class_names", "dataset",
                  "backbone")  # what reading a cache and training a head on it need


def _check_schema(path, cache: "FeatureCache") -> None:
    """Refuse a cache whose arrays disagree with the schema or with each other, naming what is wrong.

    ``cache`` may hold HDF5 datasets instead of arrays for the embeddings, ids and index
    (:class:`CacheRows`): their shapes are checked without reading them, and the embeddings'
    values are then checked block by block as they are read.
    """
    attrs, n = cache.attrs, len(cache.embeddings)
    problems = []
    if cache.embeddings.ndim != 2 or cache.embeddings.shape[1] != attrs["embedding_dim"]:
        problems.append(f"embeddings have shape {cache.embeddings.shape}, not (rows, {attrs['embedding_dim']})")
    if n != attrs["n_images"]:
        problems.append(f"{n} embedding rows, but n_images says {attrs['n_images']}")
    for name in ("labels", "ids", "index", "splits"):
        length = len(getattr(cache, name))
        if length != n or getattr(cache, name).ndim != 1:
            problems.append(f"{length} {name} for {n} embedding rows")
    recorded = attrs["class_names"]
    try:
        recorded = json.loads(recorded) if isinstance(recorded, str) else recorded  # containers are JSON
    except ValueError:
        pass
    if not isinstance(recorded, list) or list(cache.class_names) != recorded:
        problems.append(f"class names {cache.class_names} differ from the recorded {recorded}")
    if len(cache.labels) and (cache.labels.min() < 0 or cache.labels.max() >= len(cache.class_names)):
        problems.append(f"labels outside 0..{len(cache.class_names) - 1}")
    if len(cache.splits) and not np.isin(cache.splits, np.arange(len(SPLITS))).all():
        problems.append(f"split codes outside 0..{len(SPLITS) - 1}")
    if isinstance(cache.embeddings, np.ndarray) and cache.embeddings.size and not np.isfinite(cache.embeddings).all():
        problems.append(f"{int((~np.isfinite(cache.embeddings)).any(axis=-1).sum())} rows hold NaN or "
                        "infinite embeddings")
    if problems:
        raise CacheError(f"{path}: a damaged or edited cache: {'; '.join(problems)}; run the extraction again "
                         "with {force=True}")


@dataclass
class FeatureCache:
    """A cache read into memory. Rows are the images that decoded, in listing order."""

    path: Path
    embeddings: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    index: np.ndarray
    splits: np.ndarray
    class_names: list[str]
    skipped: list[dict]
    attrs: dict

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, labels) of one split: "train", "val" or "test"."""
        mask = self.splits == split_code(name)
        return self.embeddings[mask], self.labels[mask]


def verify(path, rows_per_read: int = 4096) -> None:
    """Recompute a complete cache's embeddings checksum, reading a block of rows at a time.

    Raises:
        CacheError: missing, incomplete, unreadable, or the embeddings do not match.
    """
    h5py = _h5py()
    attrs = read_attrs(path)
    sha = hashlib.sha256()
    try:
        with h5py.File(path, "r") as f:
            _check_sources(path, f)
            data = f["embeddings"]
            for start in range(0, data.shape[0], rows_per_read):
                sha.update(np.ascontiguousarray(data[start:start + rows_per_read], dtype=np.float32).tobytes())
    except (OSError, KeyError) as exc:
        raise CacheError(f"{path}: cannot read the feature cache ({exc})") from None
    if sha.hexdigest() != attrs.get("embeddings_sha256"):
        raise CacheError(f"{path}: embeddings do not match their checksum; run the extraction again with "
                         "{force=True}")


def read_cache(path, verify: bool = True) -> FeatureCache:
    """Load a complete cache (a single file or a merged shard file).

    Args:
        verify: recompute the embeddings checksum and refuse a mismatch (on by default:
            a corrupted cache is never read as complete; it costs well under a second).

    Raises:
        CacheError: missing, incomplete, unreadable or (with ``verify``) corrupted.
    """
    h5py = _h5py()
    attrs = read_attrs(path)
    try:
        with h5py.File(path, "r") as f:
            _check_sources(path, f)
            cache = FeatureCache(
                path=Path(path), embeddings=f["embeddings"][:], labels=f["labels"][:],
                ids=f["ids"].asstr()[:], index=f["index"][:], splits=f["splits"][:],
                class_names=list(f["class_names"].asstr()[:]),
                skipped=_read_skipped(f), attrs=attrs)
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CacheError(f"{path}: cannot read the feature cache ({exc}); "
                         "for a merged shard file, every shard must sit beside it") from None
    _check_schema(path, cache)
    if verify:
        digest = hashlib.sha256(np.ascontiguousarray(cache.embeddings).tobytes()).hexdigest()
        if digest != attrs.get("embeddings_sha256"):
            raise CacheError(f"{path}: embeddings do not match their checksum; "
                             "run the extraction again with {force=True}")
    return cache


def _join_attrs(attrs: list[dict], dims: list[int]) -> dict:
    """The attributes of several caches' embeddings side by side (one backbone after another)."""
    if len(attrs) == 1:
        return attrs[0]
    return {**attrs[0],
            "backbone": "+".join(str(a.get("backbone")) for a in attrs),
            "image_size": [a.get("image_size") for a in attrs],
            "weights": [a.get("weights") for a in attrs],
            "seconds": float(sum(float(a.get("seconds", 0.0)) for a in attrs)),
            "embedding_dim": int(sum(dims))}


class CacheRows:
    """One or several complete caches, read a block of rows at a time instead of whole.

    What a head that streams (``classify.py --model sgd``) trains on: only the labels and
    split codes are held in memory (9 bytes a row), so memory does not grow with the
    embeddings. Several caches of the same images are joined side by side, as
    :func:`concat_caches` does, block by block. Use it as a context manager (it holds the
    files open).

    Raises:
        CacheError: a cache is missing, incomplete, corrupted (checksum, schema, NaN rows
            found while reading), or the caches hold different images.
    """

    def __init__(self, paths, verify_checksum: bool = True):
        h5py = _h5py()
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise CacheError("no feature cache given")
        self._files, self._data, self._orders = [], [], []
        attrs = []
        try:
            for path in self.paths:
                info = read_attrs(path)
                if verify_checksum:
                    verify(path)
                try:
                    f = h5py.File(path, "r")
                    self._files.append(f)
                    _check_sources(path, f)
                    view = _RowsView(f["embeddings"], f["labels"][:], f["ids"], f["index"], f["splits"][:],
                                     list(f["class_names"].asstr()[:]), info)
                except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
                    raise CacheError(f"{path}: cannot read the feature cache ({exc})") from None
                _check_schema(path, view)
                self._data.append(view.embeddings)
                attrs.append(info)
                if len(self._data) == 1:
                    first = view
                    self.labels, self.splits, self.class_names = view.labels, view.splits, view.class_names
                    self._first_ids = None
                    self._orders.append(None)
                else:
                    self._orders.append(self._align(first, view, path))
        except BaseException:
            self.close()
            raise
        self.n = len(self.labels)
        self.dim = int(sum(d.shape[1] for d in self._data))
        self.attrs = _join_attrs(attrs, [d.shape[1] for d in self._data])
        self.path = self.paths[0]

    def _align(self, first: "_RowsView", other: "_RowsView", path) -> np.ndarray | None:
        """Where each of the first cache's rows sits in ``other`` (None: the same place)."""
        if self._first_ids is None:
            self._first_ids = first.ids.asstr()[:]
        ids = other.ids.asstr()[:]
        if np.array_equal(ids, self._first_ids):
            order = None
        else:
            where = {i: n for n, i in enumerate(ids)}
            if len(where) != len(ids) or set(where) != set(self._first_ids.tolist()):
                raise CacheError(f"{self.paths[0]} and {path} hold different images; extract both from the "
                                 "same dataset with the same {split} and {seed}")
            order = np.array([where[i] for i in self._first_ids], dtype=np.int64)
        aligned = other.labels if order is None else other.labels[order]
        splits = other.splits if order is None else other.splits[order]
        if other.class_names != first.class_names:
            raise CacheError(f"{path} has classes {other.class_names}, {self.paths[0]} has {first.class_names}")
        if not (np.array_equal(aligned, first.labels) and np.array_equal(splits, first.splits)):
            raise CacheError(f"{self.paths[0]} and {path} disagree on labels or splits of the same images")
        return order

    def read(self, start: int, stop: int) -> np.ndarray:
        """The embeddings of rows ``start:stop`` (float32, the caches side by side)."""
        parts = []
        for path, data, order in zip(self.paths, self._data, self._orders):
            if order is None:
                block = data[start:stop]
            else:
                wanted = order[start:stop]
                by_position = np.argsort(wanted)
                block = np.empty((len(wanted), data.shape[1]), np.float32)
                block[by_position] = data[wanted[by_position]]  # HDF5 reads rows in increasing order
            if not np.isfinite(block).all():
                raise CacheError(f"{path}: a damaged or edited cache: rows {start}..{stop - 1} hold NaN or "
                                 "infinite embeddings; run the extraction again with {force=True}")
            parts.append(np.asarray(block, np.float32))
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    def ids(self, start: int, stop: int) -> np.ndarray:
        """The ids of rows ``start:stop``."""
        return self._files[0]["ids"].asstr()[start:stop]

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class _RowsView:
    """The fields :func:`_check_schema` looks at, with the big ones left in the file."""

    embeddings: object
    labels: np.ndarray
    ids: object
    index: object
    splits: np.ndarray
    class_names: list[str]
    attrs: dict


def _check_sources(path, f) -> None:
    """A merged file reads a missing shard as zeros without a word (HDF5): name it instead."""
    data = f["embeddings"]
    if not data.is_virtual:
        return
    folder = Path(path).parent
    missing = sorted({s.file_name for s in data.virtual_sources() if not (folder / s.file_name).is_file()})
    if missing:
        raise CacheError(f"{path}: a merged cache whose shard(s) {', '.join(missing)} are missing; put them back "
                         "beside it (the merged file holds none of their rows)")


def _read_skipped(f) -> list[dict]:
    group = f["skipped"]
    n = len(group["index"])
    kinds = group["kinds"].asstr()[:] if "kinds" in group else [None] * n
    return [{"index": int(i), "id": s, "reason": r, "kind": k} for i, s, r, k in zip(
        group["index"][:], group["ids"].asstr()[:], group["reasons"].asstr()[:], kinds)]


_SHARED_ATTRS = ("dataset", "source", "fingerprint", "backbone", "weights", "weights_sha256",
                 "image_size", "pooling", "tta", "seed", "split", "embedding_dim", "class_names")


def _check_whole(shard_paths, infos) -> None:
    """Refuse shards that are not exactly the slices 0..K-1 of one ``--shard I/K`` split."""
    parts = []
    for p, info in zip(shard_paths, infos):
        try:
            i, k = (int(x) for x in str(info.get("shard")).split("/"))
        except ValueError:
            raise CacheError(f"{p}: not a shard (its shard attribute is {info.get('shard')!r}); merge only "
                             "the files an extraction with {shard=I/K} wrote") from None
        parts.append((i, k, p))
    counts = sorted({k for _, k, _ in parts})
    if len(counts) > 1:
        raise CacheError(f"the shards come from splits into {' and '.join(map(str, counts))} slices; "
                         "merge the shards of one split")
    k = counts[0]
    seen: dict[int, Path] = {}
    for i, _, p in parts:
        if i in seen:
            raise CacheError(f"{seen[i]} and {p} are both shard {i}/{k}; give each shard once")
        seen[i] = p
    missing = [f"{i}/{k}" for i in range(k) if i not in seen]
    if missing:
        raise CacheError(f"the set is not whole: {len(seen)} of {k} shards given, missing {', '.join(missing)}; "
                         f"extract the missing ones with {{shard}} and merge all {k}")


def merged_path(shard_path) -> Path:
    """Where the merge of a shard's set goes by default: the single-process cache's own name."""
    shard_path = Path(shard_path)
    stem = re.sub(r"\.shard\d+of\d+$", "", shard_path.stem)
    return shard_path.with_name(f"{stem}.h5")


def merge_shards(shard_paths, out_path=None) -> Path:
    """Join shard caches into one file of virtual datasets (no embedding is copied).

    The shards must share the extraction settings and be the whole set 0..K-1 of one
    ``shard="I/K"`` split. Rows are ordered by their listing index, as in a single-process
    cache. The merged file refers to the shards by relative path, so move them together.

    Args:
        out_path: default :func:`merged_path` of the first shard (the name the
            single-process extraction would have given the cache).

    Raises:
        CacheError: a shard is incomplete or missing, or shards disagree or overlap.
    """
    h5py = _h5py()
    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise CacheError("no shards to merge")
    infos = [read_attrs(p) for p in shard_paths]
    for key in _SHARED_ATTRS:
        values = {json.dumps(info.get(key)) for info in infos}
        if len(values) > 1:
            raise CacheError(f"shards disagree on {key}: {sorted(values)}; they are not one extraction")
    _check_whole(shard_paths, infos)
    out_path = Path(out_path) if out_path is not None else merged_path(shard_paths[0])
    if out_path.resolve() in {p.resolve() for p in shard_paths}:
        raise CacheError(f"{out_path}: the merged cache would replace one of its shards; name another file")
    indices = []
    for p in shard_paths:
        with h5py.File(p, "r") as f:
            indices.append(f["index"][:])
    all_index = np.concatenate(indices)
    if len(np.unique(all_index)) != len(all_index):
        raise CacheError("shards overlap: the same image appears in more than one shard")
    # Order shards by their first row so that rows come out in listing order when the
    # shards are contiguous slices; interleaved shards are recorded as they are.
    order = np.argsort([idx.min() if len(idx) else np.inf for idx in indices], kind="stable")
    shard_paths = [shard_paths[i] for i in order]
    infos = [infos[i] for i in order]
    counts = [int(info["n_images"]) for info in infos]
    n, dim = sum(counts), int(infos[0]["embedding_dim"])
    str_t = h5py.string_dtype()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f"{out_path.name}.{os.getpid()}.partial")
    sha = hashlib.sha256()
    try:
        with h5py.File(tmp, "w") as f:
            for name, shape, dtype in (("embeddings", (n, dim), np.float32), ("labels", (n,), np.int64),
                                       ("ids", (n,), str_t), ("index", (n,), np.int64),
                                       ("splits", (n,), np.uint8)):
                layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
                start = 0
                for p, count in zip(shard_paths, counts):
                    if count:
                        rel = os.path.relpath(p, out_path.parent)
                        layout[start:start + count] = h5py.VirtualSource(rel, name, shape=(count,) + shape[1:])
                    start += count
                f.create_virtual_dataset(name, layout)
            f["splits"].attrs["names"] = list(SPLITS)
            with h5py.File(shard_paths[0], "r") as s:
                f.create_dataset("class_names", data=list(s["class_names"].asstr()[:]), dtype=str_t)
            skipped = []
            for p in shard_paths:
                with h5py.File(p, "r") as s:
                    skipped += _read_skipped(s)
                    sha.update(np.ascontiguousarray(s["embeddings"][:]).tobytes())
            group = f.create_group("skipped")
            group.create_dataset("index", data=np.asarray([s["index"] for s in skipped], dtype=np.int64))
            for key, name in (("id", "ids"), ("reason", "reasons"), ("kind", "kinds")):
                group.create_dataset(name, data=[s[key] or "" for s in skipped], dtype=str_t)
            for key, value in infos[0].items():
                f.attrs[key] = attr_value(value)
            seconds = max(float(info.get("seconds", 0)) for info in infos)
            f.attrs.update({
                "n_images": n, "n_skipped": len(skipped), "shard": f"merged {len(infos)}",
                "shards": json.dumps([p.name for p in shard_paths]), "seconds": seconds,
                "images_per_second": n / seconds if seconds else 0.0,
                "embeddings_sha256": sha.hexdigest(), "complete": True})
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path


def newest_cache(root="embeddings") -> Path:
    """The most recently written complete cache under ``root``.

    Raises:
        CacheError: there is none.
    """
    candidates = sorted(Path(root).glob("**/*.h5"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            read_attrs(path)
            return path
        except CacheError:
            continue
    raise CacheError(f"no complete feature cache under {root}/; make one with extract.py "
                     "or name one with {features}")


def concat_caches(caches: list[FeatureCache]) -> FeatureCache:
    """Join the embeddings of several caches of the same images, side by side.

    Rows are matched by id and put in the first cache's order; labels, splits and class
    names must agree. This is a cheap ensemble of backbones.

    Raises:
        CacheError: the caches hold different images, labels, splits or classes.
    """
    first = caches[0]
    if len(caches) == 1:
        return first
    parts = [first.embeddings]
    for other in caches[1:]:
        where = {i: n for n, i in enumerate(other.ids)}
        if set(where) != set(first.ids.tolist()) or len(where) != len(first.ids):
            only_a = len(set(first.ids.tolist()) - set(where))
            only_b = len(set(where) - set(first.ids.tolist()))
            raise CacheError(f"{first.path} and {other.path} hold different images ({only_a} only in "
                             f"the first, {only_b} only in the second); extract both from the same "
                             "dataset with the same {split} and {seed}")
        order = np.array([where[i] for i in first.ids])
        if other.class_names != first.class_names:
            raise CacheError(f"{other.path} has classes {other.class_names}, {first.path} has {first.class_names}")
        if not (np.array_equal(other.labels[order], first.labels)
                and np.array_equal(other.splits[order], first.splits)):
            raise CacheError(f"{first.path} and {other.path} disagree on labels or splits of the same images")
        parts.append(other.embeddings[order])
    attrs = _join_attrs([c.attrs for c in caches], [p.shape[1] for p in parts])
    return FeatureCache(path=first.path, embeddings=np.hstack(parts), labels=first.labels,
                        ids=first.ids, index=first.index, splits=first.splits,
                        class_names=first.class_names, skipped=first.skipped, attrs=attrs)
