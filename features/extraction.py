"""Run a frozen backbone once over a dataset and stream its embeddings into the cache."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .backbones import create_backbone, file_sha256, get_spec, resolve_image_size, weights_file
from .data import RESIZE_METHOD, DataSource, image_batches, why_undecodable
from .errors import CacheError, UsageError

log = logging.getLogger(__name__)


@dataclass
class ExtractionResult:
    """What one call of :func:`extract` did; ``as_dict`` is what ``--json`` prints."""

    path: Path
    cache_hit: bool
    n_images: int
    n_skipped: int
    seconds: float
    images_per_second: float
    skipped: list = field(default_factory=list)

    def as_dict(self) -> dict:
        size = self.path.stat().st_size if self.path.exists() else 0
        return {"cache": str(self.path), "cache_hit": self.cache_hit, "images": self.n_images,
                "skipped": self.n_skipped, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 2), "cache_bytes": size,
                "skipped_files": self.skipped}


def library_versions() -> dict:
    """Versions of the libraries that shape the numbers, for the record."""
    import h5py
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "h5py": h5py.__version__}


def _parse_shard(shard: str) -> tuple[int, int]:
    try:
        i, k = (int(x) for x in shard.split("/"))
    except ValueError:
        i, k = -1, 0
    if not (k >= 1 and 0 <= i < k):
        raise UsageError(f"--shard {shard}: give INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4")
    return i, k


def _stale_reason(path: Path, wanted: dict) -> tuple[str | None, dict]:
    """(None, its attributes) when the cache at ``path`` was made with ``wanted``; else (why not, {})."""
    try:
        attrs = store.read_attrs(path)
    except CacheError as exc:
        return str(exc), {}
    for key, value in wanted.items():
        if json.dumps(store.attr_value(value)) != json.dumps(attrs.get(key)):
            return f"its {key} is {attrs.get(key)!r}, now {value!r}", {}
    return None, attrs


def extract(source: DataSource, backbone: str, weights: str = "imagenet",
            image_size: int | None = None, pooling: str = "avg", batch_size: int = 32,
            out_dir="embeddings", seed: int = 0, split=(0.7, 0.15, 0.15),
            max_per_class: int | None = None, force: bool = False, shard: str = "0/1",
            progress: bool = True) -> ExtractionResult:
    """Embed every image of ``source`` with a frozen backbone, or return the cached result.

    A cache with the same key whose settings and source fingerprint match is a hit and
    returns at once; a stale one (the folder changed) is recomputed. With ``shard`` "i/k"
    only every image whose listing position is in the i-th of k contiguous slices is
    embedded, into a shard file; :func:`features.store.merge_shards` joins the shards.

    Raises:
        UsageError, WeightsUnavailableError: bad settings, or weights that cannot be had.
    """
    spec = get_spec(backbone)
    size = resolve_image_size(spec.name, image_size)
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    shard_i, shard_k = _parse_shard(shard)
    wfile = weights_file(spec.name, weights)
    wsha = file_sha256(wfile) if wfile is not None else ""
    path = store.cache_path(out_dir, source.name, spec.name, size, pooling, weights, wsha, seed,
                            split, max_per_class)
    if shard_k > 1:
        path = path.with_name(f"{path.stem}.shard{shard_i}of{shard_k}.h5")
    wanted = {"fingerprint": source.fingerprint, "source": source.location, "backbone": spec.name,
              "weights": weights if wfile is None or weights == "imagenet" else str(wfile),
              "weights_sha256": wsha, "image_size": size, "pooling": pooling, "seed": seed,
              "split": list(split), "shard": f"{shard_i}/{shard_k}"}
    if path.exists() and not force:
        reason, attrs = _stale_reason(path, wanted)
        if reason is None:
            os.utime(path)  # "the newest cache" (classify.py's default) is the one used last
            log.info("cache hit: %s", path)
            return ExtractionResult(path, True, int(attrs["n_images"]), int(attrs["n_skipped"]),
                                    float(attrs["seconds"]), float(attrs["images_per_second"]))
        log.warning("recomputing %s: %s", path, reason)

    indices = np.array_split(np.arange(len(source)), shard_k)[shard_i]
    model = create_backbone(spec.name, weights=weights, image_size=size, pooling=pooling)
    skipped, seen = [], np.zeros(len(source), dtype=bool)
    start = time.perf_counter()
    with store.CacheWriter(path, spec.width, source.class_names) as writer:
        _embed_all(model, source, indices, size, batch_size, writer, seen, progress)
        seconds = time.perf_counter() - start
        for i in indices[~seen[indices]]:
            skipped.append((int(i), source.ids[i], why_undecodable(source, int(i))))
            log.warning("skipped %s: %s", source.ids[i], skipped[-1][2])
        n = int(seen.sum())
        attrs = {
            **wanted, "dataset": source.name, "source_kind": source.kind,
            "class_names": source.class_names, "n_listed": len(source), "preprocessing": spec.preprocessing,
            "resize_method": RESIZE_METHOD, "split_origin": source.split_origin,
            "max_per_class": max_per_class or 0, "batch_size": batch_size, "seconds": seconds,
            "images_per_second": n / seconds if seconds else 0.0,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": library_versions(),
        }
        writer.finish(attrs, skipped)
    return ExtractionResult(path, False, n, len(skipped), seconds, n / seconds if seconds else 0.0,
                            [{"id": s[1], "reason": s[2]} for s in skipped])


def _embed_all(model, source, indices, size, batch_size, writer, seen, progress):
    import tensorflow as tf
    from tqdm.auto import tqdm

    @tf.function(reduce_retracing=True)
    def embed(images):
        return model(images, training=False)

    with tqdm(total=len(indices), unit="img", desc=f"{model.name}", disable=not progress,
              dynamic_ncols=True) as bar:
        for batch_index, images in image_batches(source, size, batch_size, indices):
            rows = batch_index.numpy()
            embeddings = embed(images).numpy()
            writer.append(embeddings, source.labels[rows], [source.ids[i] for i in rows], rows,
                          source.splits[rows])
            seen[rows] = True
            bar.update(len(rows))
        bar.update(len(indices) - bar.n)  # the undecodable ones, reported after the bar
