"""Shard files (one worker's slice of the listing each) joined as one cache of HDF5 virtual datasets."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from ..data.splits import SPLITS
from ..errors import CacheError
from ..io import atomic_path
from .reader import CacheRows
from .schema import (
    RowsChecksum,
    attr_value,
    clean_attr,
    h5py_module,
    identity_checksum,
    read_attrs,
    read_skipped,
    write_skipped,
)

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
    h5py = h5py_module()
    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise CacheError("no shards to merge")
    infos = [read_attrs(p) for p in shard_paths]
    for p in shard_paths:  # every row is read for the merged checksum anyway: each shard is checked first
        with CacheRows([p]):  # its schema, its values' range, both checksums
            pass
        try:
            with h5py.File(p, "r") as f:
                read_skipped(f)
        except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise CacheError(f"{p}: cannot read the shard's skipped files ({exc}); extract it again") from None
    for key in _SHARED_ATTRS:
        values = {json.dumps(info.get(key)) for info in infos}
        if len(values) > 1:
            raise CacheError(f"shards disagree on {key}: {sorted(values)}; they are not one extraction")
    _check_whole(shard_paths, infos)
    out_path = Path(out_path) if out_path is not None else merged_path(shard_paths[0])
    if out_path.is_dir() or (out_path.exists() and not out_path.is_file()):
        raise CacheError(f"{out_path}: the merged cache's name is taken by a folder or a special file; move it "
                         "away, or name the cache otherwise")
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
    sha = hashlib.sha256()
    with atomic_path(out_path, "partial", hidden=False) as tmp, h5py.File(tmp, "w") as f:
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
        skipped, rows = [], RowsChecksum()
        for p in shard_paths:
            with h5py.File(p, "r") as s:
                skipped += read_skipped(s)
                sha.update(np.ascontiguousarray(s["embeddings"][:]).tobytes())
                rows.update(s["labels"][:], s["ids"].asstr()[:], index=s["index"][:], splits=s["splits"][:])
        write_skipped(f, skipped)
        for key, value in infos[0].items():
            f.attrs[key] = attr_value(value)
        seconds = max(float(info.get("seconds", 0)) for info in infos)
        f.attrs.update({
            "n_images": n, "n_skipped": len(skipped), "shard": f"merged {len(infos)}",
            "shards": json.dumps([p.name for p in shard_paths]), "seconds": seconds,
            "images_per_second": n / seconds if seconds else 0.0,
            "embeddings_sha256": sha.hexdigest(), "rows_sha256": rows.hexdigest()})
        f.attrs["identity_sha256"] = identity_checksum({k: clean_attr(v) for k, v in f.attrs.items()})
        f.attrs["complete"] = True
    return out_path

