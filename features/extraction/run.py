"""Run a frozen backbone once over a dataset and stream its embeddings into the cache.

:func:`extract` is one extraction: its settings resolved once (:class:`ExtractSettings`),
then the writers' lock, the cache-hit check, the resume from checkpoints, the engine's
pass (:mod:`.engines`) and the cache written from the checkpoints.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache import CacheWriter, Checkpoints, attr_value, read_attrs, read_listing, verify, writer_lock
from ..cache.identity import CacheIdentity
from ..data import RESIZE_METHOD, DataSource, Headers, SkippedImage, check_source, headers_for, why_skipped
from ..errors import CacheError, DiskFullError, UsageError, is_disk_full
from ..models.runtime import Choice, Prepared, choose, prepare
from ..outputs import check_output_folder
from .engines import LocalEngine, RayEngine, run_engine
from .settings import ExtractSettings, engine_gpus, resolve_batch_size

log = logging.getLogger(__name__)



@dataclass(kw_only=True)
class ExtractionResult:
    """What one call of :func:`extract` did; ``as_dict`` is what ``--json`` prints."""

    path: Path
    cache_hit: bool
    n_images: int
    n_skipped: int
    seconds: float
    images_per_second: float
    skipped: list[SkippedImage] = field(default_factory=list)
    resumed: int = 0
    ignored: dict = field(default_factory=dict)
    empty_classes: list = field(default_factory=list)
    first_batch_seconds: float = 0.0  # set-up: tracing and optimising the graph, then one batch
    steady_images_per_second: float = 0.0  # after the first batch
    engine: str = "local"
    batch_size: int | None = None  # images per forward pass (None: a cache hit, not recorded)
    batch_default_for: str | None = None  # "cpu" or "gpu" where the batch was the device's default
    runtime: str = "tf"  # what ran the network: "tf" (TensorFlow's frozen graph), "onnx" or "openvino"
    conversion_seconds: float = 0.0  # converting the network to ONNX, this run (0: converted before)
    precision: str = "fp32"  # what the embeddings were computed at: "fp32" or "bf16"
    compile_seconds: float = 0.0  # OpenVINO compiling the network for this CPU (its model cache makes it a read)

    def skipped_by_kind(self) -> dict:
        """How many images were skipped for each kind of reason."""
        return dict(Counter(item.kind for item in self.skipped))

    def as_dict(self) -> dict:
        size = self.path.stat().st_size if self.path.exists() else 0
        return {"cache": str(self.path), "cache_hit": self.cache_hit, "images": self.n_images,
                "skipped": self.n_skipped, "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 2), "cache_bytes": size,
                "skipped_files": [s.as_dict() for s in self.skipped], "skipped_by_kind": self.skipped_by_kind(),
                "ignored_files": self.ignored, "resumed_rows": self.resumed, "empty_classes": self.empty_classes,
                "first_batch_seconds": round(self.first_batch_seconds, 3),
                "steady_images_per_second": round(self.steady_images_per_second, 2), "engine": self.engine,
                "batch_size": self.batch_size, "runtime": self.runtime, "precision": self.precision,
                "conversion_seconds": round(self.conversion_seconds, 2),
                "compile_seconds": round(self.compile_seconds, 2)}


def cache_identity(source: DataSource, settings: ExtractSettings, *, precision: str = "fp32") -> CacheIdentity:
    """What this extraction's cache is of (``precision``: what the network runs at, resolved)."""
    backbone = settings.backbone
    weights = (backbone.weights if backbone.weights_file is None or backbone.weights == "imagenet"
               else str(backbone.weights_file))
    return CacheIdentity(dataset=source.name, fingerprint=source.fingerprint, source=source.location,
                         backbone=backbone.name, slug=backbone.spec.slug, weights=weights,
                         weights_sha256=backbone.weights_sha256, image_size=backbone.image_size,
                         pooling=settings.pooling, tta=settings.tta, seed=source.seed, split=tuple(source.split),
                         max_per_class=source.max_per_class, shard=tuple(settings.shard),
                         resize_method=RESIZE_METHOD, precision=precision)


def _stale_reason(path: Path, key: dict, source: DataSource) -> tuple[str | None, dict]:
    """(None, its attributes) when the cache at ``path`` was made with ``key`` from this listing;
    else (why not, {})."""
    try:
        attrs = read_attrs(path)
    except CacheError as exc:
        return str(exc), {}
    for name, value in key.items():
        if json.dumps(attr_value(value)) != json.dumps(attrs.get(name)):
            return f"its {name} is {attrs.get(name)!r}, now {value!r}", {}
    if attrs.get("precision", "fp32") != key.get("precision", "fp32"):  # fp32's key leaves its precision out
        return f"its precision is {attrs.get('precision')!r}, now {key.get('precision', 'fp32')!r}", {}
    try:
        verify(path)
        index, labels, splits, ids = read_listing(path)
    except CacheError as exc:
        return str(exc), {}
    if len(index) and (index.min() < 0 or index.max() >= len(source)):
        return "its rows name images beyond this listing", {}
    if not (np.array_equal(splits, source.splits[index]) and np.array_equal(labels, source.labels[index])
            and list(ids) == [source.ids[i] for i in index]):
        return "its images' ids, labels or splits differ from this listing's", {}
    return None, attrs


def extract(source: DataSource, backbone, **options) -> ExtractionResult:
    """Embed every image of ``source`` with a frozen backbone, or return the cached result.

    A cache with the same key whose settings, source fingerprint and per-image splits match
    is a hit and returns at once; a stale one (the folder changed) is recomputed. Rows are
    checkpointed every ``checkpoint_batches`` batches (see :mod:`features.cache.schema`): an
    interrupted run, repeated, resumes there and writes the same cache an uninterrupted one
    would. Runs of the same extraction take turns (a lock file beside the cache). With
    ``shard`` "i/k" only every image whose listing position is in the i-th of k contiguous
    slices is embedded, into a shard file; :func:`features.cache.merge_shards` joins them.
    The split, its seed and the sample per class are the listing's own (``source``).

    Args:
        backbone: an :class:`ExtractSettings` (then no ``options``), a resolved
            :class:`~features.models.registry.Backbone` or a registry name.
        options: :class:`~features.extraction.settings.ExtractOptions`'s fields, each documented there. The
            precision is settled first (:func:`features.models.runtime.choose`): a bf16 cache has its own
            name and key.

    Raises:
        UsageError, WeightsUnavailableError: bad settings, or weights that cannot be had.
        DiskFullError: the disk filled up (the finished rows are kept for a rerun).
    """
    check_source(source)
    settings = backbone if isinstance(backbone, ExtractSettings) and not options else \
        ExtractSettings.resolve(backbone, **options)
    check_output_folder(settings.out_dir)
    choice = choose(settings.runtime, settings.precision, gpu=engine_gpus(settings) > 0)
    prepared = None
    if choice.precision == "bf16":  # the cache's name and key say bf16: settled before the cache is looked for
        prepared = prepare(settings.backbone, choice, pooling=settings.pooling, tta=settings.tta,
                                    seed=source.seed, folder=settings.out_dir / "onnx", asked=settings.runtime,
                                    build=settings.engine == "local")
        choice = prepared.choice  # fp32 where OpenVINO cannot take the network (under auto)
        if settings.precision == "bf16" and choice.precision != "bf16":
            raise UsageError(f"{{precision}} bf16: {settings.backbone.name} cannot run on OpenVINO here (the "
                             "converter or OpenVINO refused it; -v says why); give {precision} fp32 or auto")
    identity = cache_identity(source, settings, precision=choice.precision)
    path, key = identity.path(settings.out_dir), identity.key()
    with writer_lock(path):  # a second run of the same extraction waits here, then hits the cache
        if path.exists() and not settings.force:
            reason, attrs = _stale_reason(path, key, source)
            if reason is None:
                os.utime(path)  # "the newest cache" (classify.py's default) is the one used last
                log.info("cache hit: %s", path)
                return ExtractionResult(path=path, cache_hit=True, n_images=int(attrs["n_images"]),
                                        n_skipped=int(attrs["n_skipped"]),
                                        seconds=float(attrs.get("seconds", 0.0)),
                                        images_per_second=float(attrs.get("images_per_second", 0.0)),
                                        engine=str(attrs.get("engine", "local")),
                                        runtime=str(attrs.get("runtime", "tf")), precision=choice.precision)
            log.warning("recomputing %s: %s", path, reason)
        batch_size, default_for = resolve_batch_size(settings)
        if default_for:
            log.info("batch size %d: the default on a %s", batch_size, default_for.upper())
        result = _extract(source, settings, batch_size, path, key=key, network=prepared or choice)
        result.batch_default_for = default_for
        return result


def _extract(source: DataSource, settings: ExtractSettings, batch_size: int, path: Path, *, key: dict, network):
    """``network``: the :class:`~features.models.runtime.Choice` of runtime and precision, or the network
    already :class:`~features.models.runtime.Prepared` (bf16: settled before the cache's name)."""
    i, k = settings.shard
    indices = np.array_split(np.arange(len(source)), k)[i]
    checkpoints = Checkpoints(path, {**key, "batch_size": batch_size, "max_pixels": source.max_pixels})
    if settings.force:
        checkpoints.clear()
    resumed, last = checkpoints.resume()
    if resumed:
        log.warning("resuming %s: %d images were embedded before the run stopped", path, resumed)
    todo = indices[indices > last]
    headers = Headers.unread(len(source))  # the Ray engine's actors read the headers of their own files
    if not len(todo):  # with nothing left to embed, nothing runs: no network is converted or built
        choice = network.choice if isinstance(network, Prepared) else network
        network = Choice("tf", choice.precision)
    if settings.engine == "ray":
        engine = RayEngine(source, settings, batch_size=batch_size, network=network)
    else:
        if len(todo):
            headers = headers_for(source, settings.backbone.image_size, indices)
        engine = LocalEngine(source, settings, batch_size=batch_size, headers=headers, network=network)
    first = None  # every row may have been checkpointed before the run stopped (a full disk)
    start = time.perf_counter()
    try:
        if len(todo):
            try:
                engine.prepare()  # the local engine's network is built before the clock starts; Ray's set-up counts
            except Exception:
                if not resumed:  # refused before any row: no checkpoint folder is left behind
                    checkpoints.clear()
                raise
            start = time.perf_counter() if engine.name == "local" else start
            first = run_engine(engine, todo, checkpoints=checkpoints,
                               checkpoint_rows=settings.checkpoint_batches * batch_size,
                               progress=settings.progress, done=len(indices) - len(todo))
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
    setup = (first[0] - start, first[1]) if first else (seconds, 0)
    embedded = _Embedded(checkpoints=checkpoints, indices=indices, headers=headers, engine=engine, resumed=resumed,
                         seconds=seconds, setup=setup)
    return _write_cache(source, settings, embedded, batch_size=batch_size, path=path, key=key)


@dataclass(frozen=True, kw_only=True)
class _Embedded:
    """What an embedding pass left for the cache: its checkpoints, the listing rows it was given (``indices``),
    their headers, the engine, the rows resumed from an earlier run, its seconds, and its set-up (seconds, rows):
    until the first batch was embedded."""

    checkpoints: Checkpoints
    indices: np.ndarray
    headers: Headers
    engine: object
    resumed: int
    seconds: float
    setup: tuple[float, int]


def _write_cache(source, settings: ExtractSettings, embedded: _Embedded, *, batch_size: int, path: Path,
                 key: dict) -> ExtractionResult:
    """The cache from the checkpoints, with every skipped image and its reason; the checkpoints removed."""
    from ..device import library_versions

    checkpoints, indices, headers, engine = embedded.checkpoints, embedded.indices, embedded.headers, embedded.engine
    resumed, seconds, (setup, setup_rows) = embedded.resumed, embedded.seconds, embedded.setup
    skipped, seen = [], np.zeros(len(source), dtype=bool)
    try:
        with CacheWriter(path, settings.backbone.spec.width, source.class_names) as writer:
            for rows, embeddings in checkpoints.parts():
                writer.append(embeddings, source.labels[rows], ids=[source.ids[i] for i in rows], index=rows,
                              splits=source.splits[rows])
                seen[rows] = True
            for i in indices[~seen[indices]]:
                skip = headers.refused.get(int(i)) or why_skipped(source, int(i))
                skipped.append(SkippedImage(int(i), source.ids[i], skip))
                log.warning("skipped %s: %s", source.ids[i], skip.reason)
            n = int(seen.sum())
            rate = (n - resumed) / seconds if seconds else 0.0
            steady = (n - resumed - setup_rows) / (seconds - setup) if seconds > setup else 0.0
            attrs = {
                **key, "dataset": source.name, "source_kind": source.kind,
                "class_names": source.class_names, "n_listed": len(source),
                "preprocessing": settings.backbone.spec.preprocessing,
                "split_origin": source.split_origin, "max_per_class": source.max_per_class or 0,
                "batch_size": batch_size, "seconds": seconds, "resumed_rows": resumed,
                "images_per_second": rate, "first_batch_seconds": setup, "max_pixels": source.max_pixels or 0,
                "ignored": source.ignored, "engine": settings.engine,
                "runtime": engine.runtime, "runtime_version": engine.runtime_version, "precision": engine.precision,
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
    return ExtractionResult(path=path, cache_hit=False, n_images=n, n_skipped=len(skipped), seconds=seconds,
                            images_per_second=rate,
                            skipped=skipped,
                            resumed=resumed, ignored=dict(source.ignored), empty_classes=empty,
                            first_batch_seconds=setup, steady_images_per_second=steady, engine=settings.engine,
                            batch_size=batch_size, runtime=engine.runtime,
                            conversion_seconds=engine.conversion_seconds, precision=engine.precision,
                            compile_seconds=engine.compile_seconds)
