"""The HDF5 feature cache's schema: its one description, its name, its attributes and their checks.

The cache package is the one place that opens a cache with h5py: :mod:`.writer` writes
one, :mod:`.reader` reads it back (checked against this schema), :mod:`.shards` joins
shard files.

One file per identity (dataset, backbone, image size, pooling, weights, split, ...), named from it by
:meth:`features.cache.identity.CacheIdentity.path`, by default ``embeddings/<dataset>/<backbone>-<size>.h5``.

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
        embeddings_sha256 (of the embedding bytes in row order), rows_sha256 (of the other
        row datasets, see :class:`RowsChecksum`; absent from caches written before it was
        added, which are checked by their embeddings alone), dataset, source_kind,
        identity_sha256 (of the attributes that say what the cache is of, the two checksums
        among them, see :data:`IDENTITY_ATTRS`; absent from caches written before it was added),
        source, fingerprint (of the source listing), class_names, n_listed, n_images,
        n_skipped, backbone, weights, weights_sha256, image_size, pooling, preprocessing,
        resize_method, embedding_dim, seed, split (JSON train/val/test fractions),
        split_origin, max_per_class, batch_size, shard ("i/k"), seconds,
        images_per_second, created (UTC ISO time), versions (JSON).

Rows are the images that decoded, in listing order. Every read checks the arrays against
each other and the attributes (:func:`check_schema`): shapes, labels and split codes in
range, embeddings finite and within ±:data:`MAX_ABS_EMBEDDING`; and, by default, both
checksums. Files are written under a temporary name in the same folder and renamed when
complete, so a file under its final name is never half-written.

While an extraction runs, its rows are checkpointed in ``<cache>.parts/``: ``key.json``
(the settings) and ``rows-<first index>.npz`` files (``index`` int64 (n,), ``embeddings``
float32 (n, D)), each a whole number of batches, each written under a temporary name and
renamed. An interrupted extraction (Ctrl-C, ``kill -9``, a full disk) leaves them; the
same command resumes after the last one and deletes the folder once the cache is whole.
``<cache>.lock`` is the writers' lock: one extraction per cache at a time. A dataset split
across workers is written as shard files (each holds the rows of its own slice of the
listing) and :func:`features.cache.shards.merge_shards` joins them as one file
of HDF5 virtual datasets, without copying the embeddings.
"""


from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.decoding import Skip, SkippedImage
from ..data.photo_ids import first_bad_id
from ..data.splits import SPLITS, split_code
from ..errors import CacheError

SCHEMA_VERSION = 1
# No backbone's pooled embedding comes near this; a row past it was edited or damaged, and would
# dominate every head (one finite 3e38 row made every prediction one class).
MAX_ABS_EMBEDDING = 1e5
ROW_DATASETS = ("embeddings", "labels", "ids", "index", "splits")


def photo_root(attrs: dict) -> str | None:
    """The folder a cache's ids are relative to (its ``source``); None for a TFDS set."""
    return attrs.get("source") if attrs.get("source_kind") == "folder" else None


class RowsChecksum:
    """The checksum of a cache's rows other than the embeddings (``rows_sha256``): SHA-256 of the
    SHA-256 digests of /labels (int64 little-endian), /ids (UTF-8, each ended by a NUL byte),
    /index (int64 little-endian) and /splits (uint8), each over its rows in order. A shard swapped
    for one whose embeddings are the same but whose splits are not is found by it."""

    NAMES = ("labels", "ids", "index", "splits")

    def __init__(self):
        import hashlib

        self._digests = {name: hashlib.sha256() for name in self.NAMES}

    def update(self, labels, ids, *, index, splits) -> None:
        self._digests["labels"].update(np.ascontiguousarray(labels, "<i8").tobytes())
        self._digests["ids"].update(b"".join(str(i).encode("utf-8", "surrogateescape") + b"\0" for i in ids))
        self._digests["index"].update(np.ascontiguousarray(index, "<i8").tobytes())
        self._digests["splits"].update(np.ascontiguousarray(splits, "u1").tobytes())

    def hexdigest(self) -> str:
        import hashlib

        return hashlib.sha256(b"".join(self._digests[name].digest() for name in self.NAMES)).hexdigest()


def h5py_module():
    import h5py

    return h5py



def attr_value(value):
    """How a Python value is stored as an HDF5 attribute (JSON for containers, "" for None)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return value


def clean_attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [clean_attr(v) for v in value.tolist()]
    return value


def read_attrs(path) -> dict:
    """The attributes of a cache, without loading any array.

    Raises:
        CacheError: missing file, not a cache, or not complete.
    """
    h5py = h5py_module()
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: no such feature cache; make it with extract.py")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: clean_attr(v) for k, v in f.attrs.items()}
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
    problems = _attr_problems(attrs)
    if "identity_sha256" in attrs and identity_checksum(attrs) != attrs["identity_sha256"]:
        problems.append("what it is of (dataset, backbone, weights, size, pooling, precision, runtime, ...) does not "
                        "match its checksum")
    if problems:
        raise CacheError(f"{path}: a damaged or edited cache: {'; '.join(problems)}; run the extraction again "
                         "with {force=True}")
    return attrs


def _attr_problems(attrs: dict) -> list[str]:
    """What is wrong with the attributes every reader relies on (their types and ranges)."""
    problems = []
    for key in ("n_images", "n_skipped", "embedding_dim"):
        value = attrs[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "embedding_dim" else 0):
            problems.append(f"its {key} {value!r} is not a count")
    for key in ("embeddings_sha256", "dataset", "backbone"):
        if not isinstance(attrs[key], str) or not attrs[key]:
            problems.append(f"its {key} {attrs[key]!r} is not a name")
    names = attrs["class_names"]
    try:
        names = json.loads(names) if isinstance(names, str) else names
    except ValueError:
        pass
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        problems.append(f"its class_names {attrs['class_names']!r} are not a list of names")
    return problems


REQUIRED_ATTRS = ("n_images", "n_skipped", "embedding_dim", "embeddings_sha256", "class_names", "dataset",
                  "backbone")  # what reading a cache and training a head on it need
# What a cache is of: the attributes a cache hit compares (the extraction's key) and what ran the network. They sit
# outside the rows' checksums, so `identity_sha256` covers them with those checksums: a bf16 cache whose precision
# and runtime were edited to fp32's and copied to the fp32 name was a cache hit at fp32.
IDENTITY_ATTRS = ("dataset", "source", "fingerprint", "class_names", "backbone", "weights", "weights_sha256",
                  "image_size", "pooling", "seed", "split", "max_per_class", "resize_method", "tta", "precision",
                  "runtime", "embeddings_sha256", "rows_sha256")


def identity_checksum(attrs: dict) -> str:
    """SHA-256 of :data:`IDENTITY_ATTRS` as read back (absent ones as null), the rows' checksums among them."""
    import hashlib

    return hashlib.sha256(json.dumps({k: attrs.get(k) for k in IDENTITY_ATTRS}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def check_schema(path, cache: "FeatureCache") -> None:
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
    if isinstance(cache.embeddings, np.ndarray) and cache.embeddings.size:
        problems += embedding_problems(cache.embeddings)
    if isinstance(cache.ids, np.ndarray) and (bad := first_bad_id(cache.ids.tolist())):
        problems.append(f"the id {bad}: ids are paths relative to the photo folder")
    if problems:
        raise CacheError(f"{path}: a damaged or edited cache: {'; '.join(problems)}; run the extraction again "
                         "with {force=True}")


def embedding_problems(block: np.ndarray, rows: str | None = None) -> list[str]:
    """What is wrong with a block of embedding rows: NaN or infinite values, or values past
    ±:data:`MAX_ABS_EMBEDDING` (no backbone gives them; one such row decides every prediction).

    Args:
        rows: how the message names the rows ("rows 128..255"); default: how many they are.
    """
    problems = []
    finite = np.isfinite(block)
    bad = (~finite).any(axis=-1)
    if bad.any():
        problems.append(f"{rows or f'{int(bad.sum())} rows'} hold NaN or infinite embeddings")
    huge = (np.abs(np.where(finite, block, 0)) > MAX_ABS_EMBEDDING).any(axis=-1)
    if huge.any():
        problems.append(f"{rows or f'{int(huge.sum())} rows'} hold values beyond ±{MAX_ABS_EMBEDDING:g}, which no "
                        "backbone gives")
    return problems


@dataclass(kw_only=True)
class FeatureCache:
    """A cache read into memory. Rows are the images that decoded, in listing order."""

    path: Path
    embeddings: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    index: np.ndarray
    splits: np.ndarray
    class_names: list[str]
    skipped: list[SkippedImage]
    attrs: dict

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, labels) of one split: "train", "val" or "test"."""
        mask = self.splits == split_code(name)
        return self.embeddings[mask], self.labels[mask]

    def corrected(self, applied) -> "FeatureCache":
        """The cache with :class:`~features.data.corrections.Applied` corrections: the removed rows gone, the
        relabelled ones with their new class, every other row as it was (its split too)."""
        import dataclasses

        keep = applied.keep
        return dataclasses.replace(self, embeddings=self.embeddings[keep], labels=applied.labels[keep],
                                   ids=self.ids[keep], index=self.index[keep], splits=self.splits[keep])


def write_skipped(f, skipped) -> None:
    """The ``skipped`` group: every :class:`~features.data.SkippedImage` of the listing."""
    h5py = h5py_module()
    skipped = list(skipped)
    group = f.create_group("skipped")
    group.create_dataset("index", data=np.asarray([s.index for s in skipped], dtype=np.int64))
    for name, values in (("ids", [s.id for s in skipped]), ("reasons", [s.reason for s in skipped]),
                         ("kinds", [s.kind or "" for s in skipped])):
        group.create_dataset(name, data=values, dtype=h5py.string_dtype())


def read_skipped(f) -> list[SkippedImage]:
    """The ``skipped`` group back (a cache written before kinds were recorded gives kind "")."""
    group = f["skipped"]
    n = len(group["index"])
    kinds = group["kinds"].asstr()[:] if "kinds" in group else [""] * n
    return [SkippedImage(int(i), str(s), Skip(str(k), str(r))) for i, s, r, k in zip(
        group["index"][:], group["ids"].asstr()[:], group["reasons"].asstr()[:], kinds)]
