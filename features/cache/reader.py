"""Reading a cache back, checked: whole (:func:`read_cache`), a block of rows at a time
(:class:`CacheRows`), or several caches of the same images side by side (:func:`concat_caches`).

Every read checks the file against its schema (:func:`features.cache.schema.check_schema`) and,
by default, its checksum; rows of several caches are matched by image id in one place,
:func:`align_ids`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import validate
from ..errors import CacheError
from .schema import (
    FeatureCache,
    RowsChecksum,
    check_schema,
    embedding_problems,
    h5py_module,
    read_attrs,
    read_skipped,
)

CHECK_ROWS = 1024  # rows a digest of a streamed read covers (CacheRows); the streamed heads read multiples of it


def _digest(block) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(block, dtype=np.float32).tobytes()).digest()


def verify(path, rows_per_read: int = 4096, units: bool = False) -> list[bytes] | None:
    """Recompute a complete cache's checksums (embeddings, and the other rows where the cache records
    theirs), reading a block of rows at a time.

    Args:
        units: also return the SHA-256 of each :data:`CHECK_ROWS` rows' embeddings, in the same pass:
            what :class:`CacheRows` compares every later read with.

    Raises:
        CacheError: missing, incomplete, unreadable, or a checksum does not match.
    """
    h5py = h5py_module()
    attrs = read_attrs(path)
    rows_per_read = max(CHECK_ROWS, rows_per_read // CHECK_ROWS * CHECK_ROWS)
    sha, rows, digests = hashlib.sha256(), RowsChecksum(), []
    try:
        with h5py.File(path, "r") as f:
            check_sources(path, f)
            data = f["embeddings"]
            for start in range(0, data.shape[0], rows_per_read):
                stop = start + rows_per_read
                block = np.ascontiguousarray(data[start:stop], dtype=np.float32)
                sha.update(block.tobytes())
                if units:
                    digests += [_digest(block[s:s + CHECK_ROWS]) for s in range(0, len(block), CHECK_ROWS)]
                rows.update(f["labels"][start:stop], f["ids"].asstr()[start:stop], index=f["index"][start:stop],
                            splits=f["splits"][start:stop])
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CacheError(f"{path}: cannot read the feature cache ({exc})") from None
    _check_checksums(path, attrs, sha.hexdigest(), rows.hexdigest())
    return digests if units else None


def _check_checksums(path, attrs: dict, embeddings: str, rows: str) -> None:
    if embeddings != attrs.get("embeddings_sha256"):
        raise CacheError(f"{path}: embeddings do not match their checksum; run the extraction again with "
                         "{force=True}")
    if "rows_sha256" in attrs and rows != attrs["rows_sha256"]:
        raise CacheError(f"{path}: labels, ids, listing positions or splits do not match their checksum (an "
                         "edited cache, or a shard swapped for another); run the extraction again with {force=True}")


def read_cache(path, verify: bool = True) -> FeatureCache:
    """Load a complete cache (a single file or a merged shard file).

    Args:
        verify: recompute the embeddings checksum and refuse a mismatch (on by default:
            a corrupted cache is never read as complete; it costs well under a second).

    Raises:
        CacheError: missing, incomplete, unreadable or (with ``verify``) corrupted.
    """
    path = validate.path(path, "path", "a feature cache")
    h5py = h5py_module()
    attrs = read_attrs(path)
    try:
        with h5py.File(path, "r") as f:
            check_sources(path, f)
            cache = FeatureCache(
                path=Path(path), embeddings=f["embeddings"][:], labels=f["labels"][:],
                ids=f["ids"].asstr()[:], index=f["index"][:], splits=f["splits"][:],
                class_names=list(f["class_names"].asstr()[:]),
                skipped=read_skipped(f), attrs=attrs)
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CacheError(f"{path}: cannot read the feature cache ({exc}); "
                         "for a merged shard file, every shard must sit beside it") from None
    check_schema(path, cache)
    if verify:
        rows = RowsChecksum()
        rows.update(cache.labels, cache.ids, index=cache.index, splits=cache.splits)
        _check_checksums(path, attrs, hashlib.sha256(np.ascontiguousarray(cache.embeddings).tobytes()).hexdigest(),
                         rows.hexdigest())
    return cache


def align_ids(reference, other, exact: bool = True) -> np.ndarray | None:
    """Where each id of ``reference`` sits in ``other``: the one way rows are matched by image id.

    Args:
        exact: ``other`` must hold exactly the ids of ``reference`` (two caches of the same
            images); False lets it hold more (an ensemble member scored on more images).

    Returns:
        The positions, or None where ``other`` is ``reference`` in the same order.

    Raises:
        ValueError: an id repeated in ``other``, or ids in one and not the other (the
            message counts them); callers say it in their own terms.
    """
    reference, other = np.asarray(reference), np.asarray(other)
    if exact and np.array_equal(reference, other):
        return None
    where = {i: n for n, i in enumerate(other.tolist())}
    repeated = (len(other) - len(where)) + (len(reference) - len(set(reference.tolist())))
    if repeated:
        raise ValueError(f"{repeated} repeated ids")
    missing = sum(i not in where for i in reference.tolist())
    extra = len(where) - (len(reference) - missing)
    if missing or (exact and extra):
        raise ValueError(f"{missing} only in the first, {extra} only in the second" if exact
                         else f"{missing} ids missing")
    return np.fromiter((where[i] for i in reference.tolist()), dtype=np.int64, count=len(reference))


def _check_same_rows(first_path, path, first, other, order) -> None:
    """Two caches of the same images must agree on every image's class and split."""
    labels = other.labels if order is None else other.labels[order]
    splits = other.splits if order is None else other.splits[order]
    if other.class_names != first.class_names:
        raise CacheError(f"{path} has classes {other.class_names}, {first_path} has {first.class_names}")
    if not (np.array_equal(labels, first.labels) and np.array_equal(splits, first.splits)):
        raise CacheError(f"{first_path} and {path} disagree on labels or splits of the same images")


def _align_caches(first_path, path, first_ids, ids) -> np.ndarray | None:
    try:
        return align_ids(first_ids, ids)
    except ValueError as exc:
        raise CacheError(f"{first_path} and {path} hold different images ({exc}); extract both from the same "
                         "dataset with the same {split} and {seed}") from None


def read_listing(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index, labels, splits, ids) of a complete cache's rows, without reading its embeddings.

    Raises:
        CacheError: missing, incomplete or unreadable.
    """
    h5py = h5py_module()
    read_attrs(path)
    try:
        with h5py.File(path, "r") as f:
            check_sources(path, f)
            return f["index"][:], f["labels"][:], f["splits"][:], f["ids"].asstr()[:]
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CacheError(f"{path}: cannot read the feature cache ({exc})") from None


def join_attrs(attrs: list[dict], dims: list[int]) -> dict:
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

    With ``verify_checksum`` (the default) the checksums are recomputed when the caches are opened,
    and every later read of whole :data:`CHECK_ROWS`-row units (every read of the streamed heads)
    is compared with the digests that pass took: a file changed in place while a fit reads it
    pass after pass (another process writing it) ends the fit, it never trains on other rows.

    Raises:
        CacheError: a cache is missing, incomplete, corrupted (checksum, schema, NaN rows
            found while reading), changed since it was opened, or the caches hold different images.
    """

    def __init__(self, paths, verify_checksum: bool = True):
        h5py = h5py_module()
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise CacheError("no feature cache given")
        self._files, self._data, self._orders, self._units = [], [], [], []
        attrs = []
        try:
            for path in self.paths:
                info = read_attrs(path)
                units = verify(path, units=True) if verify_checksum else None
                try:
                    f = h5py.File(path, "r")
                    self._files.append(f)
                    check_sources(path, f)
                    view = _RowsView(embeddings=f["embeddings"], labels=f["labels"][:], ids=f["ids"], index=f["index"],
                                     splits=f["splits"][:],
                                     class_names=list(f["class_names"].asstr()[:]), attrs=info)
                except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
                    raise CacheError(f"{path}: cannot read the feature cache ({exc})") from None
                check_schema(path, view)
                self._data.append(view.embeddings)
                attrs.append(info)
                if len(self._data) == 1:
                    first = view
                    self.labels, self.splits, self.class_names = view.labels, view.splits, view.class_names
                    self._first_ids = None
                    self._orders.append(None)
                else:
                    self._orders.append(self._align(first, view, path))
                    if units is not None:  # read in the first cache's order: the digests of that order's units
                        units = [_digest(self._part(len(self._data) - 1, s, min(s + CHECK_ROWS, len(self.labels))))
                                 for s in range(0, len(self.labels), CHECK_ROWS)]
                self._units.append(units)
        except BaseException:
            self.close()
            raise
        self.n = len(self.labels)
        self.dim = int(sum(d.shape[1] for d in self._data))
        self.attrs = join_attrs(attrs, [d.shape[1] for d in self._data])
        self.path = self.paths[0]

    def _align(self, first: "_RowsView", other: "_RowsView", path) -> np.ndarray | None:
        """Where each of the first cache's rows sits in ``other`` (None: the same place)."""
        if self._first_ids is None:
            self._first_ids = first.ids.asstr()[:]
        order = _align_caches(self.paths[0], path, self._first_ids, other.ids.asstr()[:])
        _check_same_rows(self.paths[0], path, first, other, order)
        return order

    def _part(self, i: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of cache ``i``, in the first cache's order."""
        data, order = self._data[i], self._orders[i]
        if order is None:
            return data[start:stop]
        wanted = order[start:stop]
        by_position = np.argsort(wanted)
        block = np.empty((len(wanted), data.shape[1]), np.float32)
        block[by_position] = data[wanted[by_position]]  # HDF5 reads rows in increasing order
        return block

    def _check_unchanged(self, i: int, start: int, block: np.ndarray) -> None:
        """Compare each whole unit of a read with the digest taken when the cache was opened."""
        units = self._units[i]
        if units is None or start % CHECK_ROWS:
            return
        for s in range(0, len(block), CHECK_ROWS):
            part = block[s:s + CHECK_ROWS]
            u = (start + s) // CHECK_ROWS
            if len(part) == min(CHECK_ROWS, self.n - start - s) and _digest(part) != units[u]:
                raise CacheError(f"{self.paths[i]}: rows {start + s}..{start + s + len(part) - 1} changed since the "
                                 "cache was opened and checked (another process writing it?); nothing was written. "
                                 "Let it finish, or run the extraction again with {force=True}")

    def read(self, start: int, stop: int) -> np.ndarray:
        """The embeddings of rows ``start:stop`` (float32, the caches side by side), each whole
        :data:`CHECK_ROWS`-row unit compared with the digest taken when the caches were opened."""
        parts = []
        for i, path in enumerate(self.paths):
            block = self._part(i, start, stop)
            self._check_unchanged(i, start, block)
            problems = embedding_problems(block, f"rows {start}..{stop - 1}")
            if problems:
                raise CacheError(f"{path}: a damaged or edited cache: {'; '.join(problems)}; run the extraction "
                                 "again with {force=True}")
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


@dataclass(kw_only=True)
class _RowsView:
    """The fields :func:`check_schema` looks at, with the big ones left in the file."""

    embeddings: object
    labels: np.ndarray
    ids: object
    index: object
    splits: np.ndarray
    class_names: list[str]
    attrs: dict


def check_sources(path, f) -> None:
    """A merged file reads a missing shard as zeros without a word (HDF5): name it instead."""
    data = f["embeddings"]
    if not data.is_virtual:
        return
    folder = Path(path).parent
    missing = sorted({s.file_name for s in data.virtual_sources() if not (folder / s.file_name).is_file()})
    if missing:
        raise CacheError(f"{path}: a merged cache whose shard(s) {', '.join(missing)} are missing; put them back "
                         "beside it (the merged file holds none of their rows)")


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
        order = _align_caches(first.path, other.path, first.ids, other.ids)
        _check_same_rows(first.path, other.path, first, other, order)
        parts.append(other.embeddings if order is None else other.embeddings[order])
    attrs = join_attrs([c.attrs for c in caches], [p.shape[1] for p in parts])
    return FeatureCache(path=first.path, embeddings=np.hstack(parts), labels=first.labels,
                        ids=first.ids, index=first.index, splits=first.splits,
                        class_names=first.class_names, skipped=first.skipped, attrs=attrs)
