"""Run a frozen backbone once over a dataset and stream its embeddings into the cache."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import runs, store
from .backbones import (Backbone, check_batch_size, check_tta, create_backbone, default_batch_size, embedding_function,
                        resolve_backbone, visible_gpus)
from .data import DEFAULT_SPLIT, RESIZE_METHOD, DataSource, Headers, headers_for, image_batches, why_skipped
from .errors import CacheError, DiskFullError, UsageError, is_disk_full

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
    resumed: int = 0
    ignored: dict = field(default_factory=dict)
    empty_classes: list = field(default_factory=list)
    first_batch_seconds: float = 0.0  # set-up: tracing and optimising the graph, then one batch
    steady_images_per_second: float = 0.0  # after the first batch
    engine: str = "local"
    batch_size: int | None = None  # images per forward pass (None: a cache hit, not recorded)
    batch_default_for: str | None = None  # "cpu" or "gpu" where the batch was the device's default

    def skipped_by_kind(self) -> dict:
        """How many images were skipped for each kind of reason."""
        return dict(Counter(item["kind"] for item in self.skipped))

    def as_dict(self) -> dict:
        size = self.path.stat().st_size if self.path.exists() else 0
        return {"cache": str(self.path), "cache_hit": self.cache_hit, "images": self.n_images,
                "skipped": self.n_skipped, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 2), "cache_bytes": size,
                "skipped_files": self.skipped, "skipped_by_kind": self.skipped_by_kind(),
                "ignored_files": self.ignored, "resumed_rows": self.resumed, "empty_classes": self.empty_classes,
                "first_batch_seconds": round(self.first_batch_seconds, 3),
                "steady_images_per_second": round(self.steady_images_per_second, 2), "engine": self.engine,
                "batch_size": self.batch_size}


def library_versions() -> dict:
    """Versions of the libraries that shape the numbers, for the record."""
    import h5py
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "h5py": h5py.__version__}


ENGINES = ("local", "ray")


def check_settings(batch_size: int | None = None, pooling: str = "avg", shard: str = "0/1",
                   engine: str = "local", tta: str = "none") -> tuple[int, int]:
    """Check the extraction's own settings (the backbone's are ``resolve_backbone``'s).

    A ``batch_size`` of None is the device's default (see :func:`resolve_batch_size`).

    Returns:
        The shard as (index, count).

    Raises:
        UsageError: a setting out of range.
    """
    if batch_size is not None:
        check_batch_size(batch_size)
    if engine not in ENGINES:
        raise UsageError(f"{{engine}} {engine}: choose {' or '.join(ENGINES)}")
    if pooling not in ("avg", "max"):
        raise UsageError(f"{{pooling}} {pooling}: choose avg or max")
    check_tta(tta)
    try:
        i, k = (int(x) for x in str(shard).split("/"))
    except ValueError:
        i, k = -1, 0
    if not (k >= 1 and 0 <= i < k):
        raise UsageError(f"{{shard}} {shard}: give INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4")
    return i, k


def resolve_batch_size(batch_size: int | None, engine: str = "local",
                       ray_address: str | None = None) -> tuple[int, str | None]:
    """(batch, device): ``batch_size`` as given (device None), or where it is None the default
    for the device that will embed ("gpu" or "cpu"): a GPU of this process (local engine) or
    of the cluster (Ray engine, one actor per GPU).
    """
    if batch_size is not None:
        return batch_size, None
    if engine == "ray":
        from . import ray_engine

        return default_batch_size(ray_engine.cluster_gpus(ray_address))
    return default_batch_size(visible_gpus())


def _stale_reason(path: Path, wanted: dict) -> tuple[str | None, dict]:
    """(None, its attributes) when the cache at ``path`` was made with ``wanted``; else (why not, {})."""
    try:
        attrs = store.read_attrs(path)
    except CacheError as exc:
        return str(exc), {}
    for key, value in wanted.items():
        if json.dumps(store.attr_value(value)) != json.dumps(attrs.get(key)):
            return f"its {key} is {attrs.get(key)!r}, now {value!r}", {}
    try:
        store.verify(path)
    except CacheError as exc:
        return str(exc), {}
    return None, attrs


def extract(source: DataSource, backbone, weights: str = "imagenet",
            image_size: int | None = None, pooling: str = "avg", batch_size: int | None = None,
            out_dir="embeddings", seed: int = 0, split=DEFAULT_SPLIT,
            max_per_class: int | None = None, force: bool = False, shard: str = "0/1",
            progress: bool = True, checkpoint_batches: int = 8, engine: str = "local",
            ray_address: str | None = None, tta: str = "none") -> ExtractionResult:
    """Embed every image of ``source`` with a frozen backbone, or return the cached result.

    A cache with the same key whose settings and source fingerprint match is a hit and
    returns at once; a stale one (the folder changed) is recomputed. Rows are checkpointed
    every ``checkpoint_batches`` batches (see :mod:`features.store`): an interrupted run,
    repeated, resumes there and writes the same cache an uninterrupted one would. Runs of
    the same extraction take turns (a lock file beside the cache). With ``shard`` "i/k"
    only every image whose listing position is in the i-th of k contiguous slices is
    embedded, into a shard file; :func:`features.store.merge_shards` joins the shards.

    Args:
        backbone: a :class:`~features.backbones.Backbone` from ``resolve_backbone``, or a
            registry name resolved here with ``weights`` and ``image_size``.
        batch_size: images per forward pass; None picks the device's default
            (:data:`features.backbones.DEFAULT_BATCH_SIZE`), recorded in the cache.
        engine: "local" (this process, every core) or "ray" (a pool of actors on a Ray
            cluster, see :mod:`features.ray_engine`); both write the same cache.
        ray_address: the Ray cluster to use (see :func:`features.ray_engine.connect`);
            None starts a local Ray.
        tta: "flip" stores the mean of each image's and its mirror's embedding (twice the
            work; recorded in the cache's attributes and name, ``-ttaflip``).

    Raises:
        UsageError, WeightsUnavailableError: bad settings, or weights that cannot be had.
        DiskFullError: the disk filled up (the finished rows are kept for a rerun).
    """
    backbone = resolve_backbone(backbone, image_size, weights)
    shard_i, shard_k = check_settings(batch_size, pooling, shard, engine, tta)
    runs.check_output_folder(out_dir)
    weights, wfile, wsha, size = backbone.weights, backbone.weights_file, backbone.weights_sha256, backbone.image_size
    path = store.cache_path(out_dir, source.name, backbone.name, size, pooling, weights, wsha, seed,
                            split, max_per_class, tta)
    if shard_k > 1:
        path = path.with_name(f"{path.stem}.shard{shard_i}of{shard_k}.h5")
    wanted = {"fingerprint": source.fingerprint, "source": source.location, "backbone": backbone.name,
              "weights": weights if wfile is None or weights == "imagenet" else str(wfile),
              "weights_sha256": wsha, "image_size": size, "pooling": pooling, "seed": seed,
              "split": list(split), "shard": f"{shard_i}/{shard_k}", "resize_method": RESIZE_METHOD}
    if tta != "none":  # caches made before the option have no such attribute
        wanted["tta"] = tta
    with store.writer_lock(path):  # a second run of the same extraction waits here, then hits the cache
        if path.exists() and not force:
            reason, attrs = _stale_reason(path, wanted)
            if reason is None:
                os.utime(path)  # "the newest cache" (classify.py's default) is the one used last
                log.info("cache hit: %s", path)
                return ExtractionResult(path, True, int(attrs["n_images"]), int(attrs["n_skipped"]),
                                        float(attrs.get("seconds", 0.0)), float(attrs.get("images_per_second", 0.0)),
                                        engine=str(attrs.get("engine", "local")))
            log.warning("recomputing %s: %s", path, reason)
        batch_size, default_for = resolve_batch_size(batch_size, engine, ray_address)
        if default_for:
            log.info("batch size %d: the default on a %s", batch_size, default_for.upper())
        result = _extract(source, backbone, pooling, batch_size, path, wanted, max_per_class,
                          shard_i, shard_k, force, progress, checkpoint_batches, engine, ray_address)
        result.batch_default_for = default_for
        return result


def _extract(source, backbone: Backbone, pooling, batch_size, path, wanted, max_per_class, shard_i, shard_k,
             force, progress, checkpoint_batches, engine="local", ray_address=None) -> ExtractionResult:
    import keras

    spec, size = backbone.spec, backbone.image_size
    indices = np.array_split(np.arange(len(source)), shard_k)[shard_i]
    checkpoints = store.Checkpoints(path, {**wanted, "batch_size": batch_size, "max_pixels": source.max_pixels})
    if force:
        checkpoints.clear()
    resumed, last = checkpoints.resume()
    if resumed:
        log.warning("resuming %s: %d images were embedded before the run stopped", path, resumed)
    todo = indices[indices > last]
    headers = Headers.unread(len(source))  # the Ray engine's actors read the headers of their own files
    start = time.perf_counter()  # the Ray engine's set-up (Ray, its actors) counts; the local one's model not
    try:
        first = None  # every row may have been checkpointed before the run stopped (a full disk)
        if len(todo) and engine == "ray":
            from . import ray_engine

            first = ray_engine.embed_all(source, backbone, pooling, wanted["seed"], batch_size, todo, checkpoints,
                                         checkpoint_batches, progress, done=len(indices) - len(todo),
                                         address=ray_address, tta=wanted.get("tta", "none"))
        elif len(todo):
            headers = headers_for(source, size, indices)
            if backbone.weights == "none":  # the same random network in every run, so a resumed run matches
                keras.utils.set_random_seed(wanted["seed"])
            model = create_backbone(backbone, pooling=pooling, tta=wanted.get("tta", "none"))
            start = time.perf_counter()
            first = _embed_all(model, source, todo, size, batch_size, checkpoints, headers, checkpoint_batches,
                               progress, done=len(indices) - len(todo))
    except KeyboardInterrupt:
        log.warning("interrupted: the images embedded so far are kept in %s; run the same command again "
                    "to resume", checkpoints.dir)
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"no space left on the device while writing {checkpoints.dir}: free some "
                                "space and run the same command again; it resumes where it stopped") from None
        raise
    seconds = time.perf_counter() - start
    # The one-time set-up (tracing and optimising the graph, the first batch), and the rate after it.
    setup, setup_rows = (first[0] - start, first[1]) if first else (seconds, 0)
    skipped, seen = [], np.zeros(len(source), dtype=bool)
    try:
        with store.CacheWriter(path, spec.width, source.class_names) as writer:
            for rows, embeddings in checkpoints.parts():
                writer.append(embeddings, source.labels[rows], [source.ids[i] for i in rows], rows,
                              source.splits[rows])
                seen[rows] = True
            for i in indices[~seen[indices]]:
                skip = headers.refused.get(int(i)) or why_skipped(source, int(i))
                skipped.append((int(i), source.ids[i], skip.reason, skip.kind))
                log.warning("skipped %s: %s", source.ids[i], skip.reason)
            n = int(seen.sum())
            rate = (n - resumed) / seconds if seconds else 0.0
            steady = (n - resumed - setup_rows) / (seconds - setup) if seconds > setup else 0.0
            attrs = {
                **wanted, "dataset": source.name, "source_kind": source.kind,
                "class_names": source.class_names, "n_listed": len(source), "preprocessing": spec.preprocessing,
                "split_origin": source.split_origin, "max_per_class": max_per_class or 0,
                "batch_size": batch_size, "seconds": seconds, "resumed_rows": resumed,
                "images_per_second": rate, "first_batch_seconds": setup, "max_pixels": source.max_pixels or 0,
                "ignored": source.ignored, "engine": engine,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "versions": library_versions(),
            }
            writer.finish(attrs, skipped)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"no space left on the device while writing {path}: free some space and run "
                                "the same command again (the embedded images are kept)") from None
        raise
    checkpoints.clear()
    empty = [c for k, c in enumerate(source.class_names) if not (source.labels[seen] == k).any()
             and (source.labels[indices] == k).any()]
    if empty:
        log.warning("every image of class %s was skipped: a classifier cannot learn it; "
                    "fix or remove those files", ", ".join(empty))
    return ExtractionResult(path, False, n, len(skipped), seconds, rate,
                            [{"id": s[1], "reason": s[2], "kind": s[3]} for s in skipped],
                            resumed=resumed,
                            ignored=dict(source.ignored), empty_classes=empty, first_batch_seconds=setup,
                            steady_images_per_second=steady, engine=engine, batch_size=batch_size)


def _embed_all(model, source, indices, size, batch_size, checkpoints, headers, checkpoint_batches, progress,
               done=0):
    """Embed the rows ``indices``, checkpointing every ``checkpoint_batches`` batches."""
    from tqdm.auto import tqdm

    batches = iter(image_batches(source, size, batch_size, indices, headers))  # decoding starts now ...
    embed = embedding_function(model, size)  # ... while the graph is traced and optimised
    rows, chunks, first = [], [], None
    with tqdm(total=len(indices) + done, initial=done, unit="img", desc=f"{model.name}", disable=not progress,
              dynamic_ncols=True) as bar:
        for batch_index, images in batches:
            rows.append(batch_index.numpy())
            chunks.append(embed(images).numpy())
            bar.update(len(rows[-1]))
            if first is None:
                first = (time.perf_counter(), len(rows[-1]))
            if len(chunks) == checkpoint_batches:
                checkpoints.write(np.concatenate(rows), np.concatenate(chunks))
                rows, chunks = [], []
        if chunks:
            checkpoints.write(np.concatenate(rows), np.concatenate(chunks))
        bar.update(len(indices) + done - bar.n)  # the undecodable ones, reported after the bar
    return first
