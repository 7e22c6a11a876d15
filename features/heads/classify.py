"""Fit a head on a feature cache, score it on the test split, record the run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import validate
from ..cache import FeatureCache, read_attrs
from ..data.splits import SPLITS, TEST, TRAIN, VAL
from ..errors import CacheError, UsageError
from ..memory import available_memory
from ..outputs import check_output_folder
from ..records import metrics, runs
from ..records.runs import RunFiles
from ..records.scored import Scored, write_scored
from . import registry as heads
from .files import save_head
from .params import check_epochs, check_params, check_search
from .search import fit_head

METHOD = "frozen-features"


# Bytes an in-memory head needs per byte of embeddings: the matrix, its split copies,
# train + val stacked for the refit and the scaler's output.
MEMORY_FACTOR = 4


def fits_in_memory(paths, available: int | None = None) -> bool:
    """Whether an in-memory head can hold these caches' embeddings (and its copies of them)."""
    attrs = [read_attrs(p) for p in paths]
    size = int(attrs[0]["n_images"]) * sum(int(a["embedding_dim"]) for a in attrs) * 4
    return size * MEMORY_FACTOR <= (available_memory() if available is None else available)


def check_fits_in_memory(paths, head: str, available: int | None = None) -> None:
    """Refuse to load caches whose embeddings an in-memory head that cannot stream could not hold.

    Raises:
        UsageError: naming the size, the memory available and the heads that stream.
    """
    if fits_in_memory(paths, available):
        return
    attrs = [read_attrs(p) for p in paths]
    rows = int(attrs[0]["n_images"])
    size = rows * sum(int(a["embedding_dim"]) for a in attrs) * 4
    available = available_memory() if available is None else available
    streaming = [name for name, spec in heads.HEADS.items() if spec.streams]
    raise UsageError(f"{paths[0]}: {rows} rows of embeddings take {size / 1e9:.1f} GB; {{head}} {head} holds "
                     f"them in memory, about {size * MEMORY_FACTOR / 1e9:.1f} GB with its copies, and "
                     f"{available / 1e9:.1f} GB is available: train {' or '.join(f'{{head={n}}}' for n in streaming)}, "
                     "which read them a block at a time")


def classify(cache: FeatureCache, head: str, fixed: dict | None = None, class_weight: str | None = None,
             *, cv: int = 5, n_jobs: int | None = -1, seed: int = 0, out_dir="runs",
             features=None) -> dict:
    """Train ``head`` on the cache's train (+ val) rows and score it on its test rows.

    Writes a run folder (head.skops, metrics.json, report.txt, confusion.png) under
    ``out_dir`` and appends one row to the results table.

    Returns:
        The row appended to the results table, plus "metrics" (see :func:`features.records.metrics.score`).
    """
    check_output_folder(out_dir)
    _require_test_rows(cache.path, cache.splits)
    X_train, y_train = cache.split("train")
    X_val, y_val = cache.split("val")
    X_test, y_test = cache.split("test")
    fitted = fit_head(head, X_train, y_train, X_val, y_val=y_val, fixed=fixed, class_weight=class_weight,
                            cv=cv, n_jobs=n_jobs, seed=seed)
    start = time.perf_counter()
    proba = fitted.predict_proba(X_test)
    predict_seconds = time.perf_counter() - start
    val = None
    if len(y_val):  # the head saw val in its final fit: a copy fitted on train alone scores it fairly
        held_out = heads.make_head(head, fitted.params, class_weight=class_weight, seed=seed, probability=True,
                                   n_jobs=n_jobs,
                                   calibration=fitted.calibration)
        val = (cache.ids[cache.splits == VAL], y_val, held_out.fit(X_train, y_train).predict_proba(X_val))
    return _record(fitted, cache, proba=proba, y_test=y_test, test_ids=cache.ids[cache.splits == TEST],
                   predict_seconds=predict_seconds, out_dir=out_dir, features=features, val=val,
                   settings={"fixed": fixed, "class_weight": class_weight, "cv": cv, "seed": seed})


def fit_streamed(name: str, rows, *, fixed: dict | None = None, class_weight: str | None = None, seed: int = 0,
                 epochs: int | None = None) -> heads.FittedHead:
    """Fit a head a block of rows at a time, the way its registry entry streams (``HeadSpec.streams``):
    "partial_fit" (sgd, :func:`.streaming.fit_streaming_head`) or "lbfgs" (logreg, :mod:`.lbfgs`).

    Raises:
        UsageError: a head that cannot stream (naming those that can).
    """
    spec = heads.get_head_spec(name)
    if spec.streams == "lbfgs":
        from .lbfgs import fit_lbfgs_head

        return fit_lbfgs_head(name, rows, fixed=fixed, class_weight=class_weight, seed=seed, epochs=epochs)
    if spec.streams != "partial_fit":
        can = ", ".join(n for n, s in heads.HEADS.items() if s.streams)
        raise UsageError(f"{{head}} {name} holds the embeddings in memory and cannot stream; heads that stream: {can}")
    from .streaming import fit_streaming_head

    return fit_streaming_head(name, rows, fixed=fixed, class_weight=class_weight, seed=seed, epochs=epochs)


def classify_streaming(rows, head: str, *, fixed: dict | None = None, class_weight: str | None = None,
                       seed: int = 0, epochs: int | None = None, out_dir="runs", features=None) -> dict:
    """:func:`classify`, a block of rows at a time (:func:`fit_streamed`), on a
    :class:`features.cache.CacheRows`: settings chosen on the validation split, memory
    independent of the number of rows.
    """
    from .blocks import predict_split

    check_output_folder(out_dir)
    _require_test_rows(rows.path, rows.splits)
    fitted = fit_streamed(head, rows, fixed=fixed, class_weight=class_weight, seed=seed, epochs=epochs)
    start = time.perf_counter()
    proba, y_test, ids = predict_split(fitted, rows, TEST)
    predict_seconds = time.perf_counter() - start
    return _record(fitted, rows, proba=proba, y_test=y_test, test_ids=ids, predict_seconds=predict_seconds,
                   out_dir=out_dir, features=features, val=fitted.val,
                   settings={"fixed": fixed, "class_weight": class_weight, "epochs": epochs, "seed": seed})


def classify_caches(paths=None, head: str = "logreg", *, fixed: dict | None = None, stream: bool = False,
                    class_weight: str | None = None, cv: int = 5, n_jobs: int | None = -1, seed: int = 0,
                    epochs: int | None = None, out_dir="runs", embeddings_dir="embeddings") -> dict:
    """A head on the caches at ``paths`` (several are joined side by side), scored once on their test rows.

    ``paths`` None: the cache extracted or re-used last under ``embeddings_dir``.

    The one policy for how the caches are read: a head that always streams (sgd) reads them a block
    of rows at a time; one that can (logreg) does so when ``stream`` is set or when the matrix would not
    fit in memory; the others load them, after a check that they fit, every row verified.

    Returns:
        As :func:`classify`; a streamed fit adds "passes".

    Raises:
        UsageError: ``stream`` for a head that cannot stream, or caches too large for an in-memory head.
    """
    import logging

    from .. import cache as store

    spec = heads.get_head_spec(head)  # every setting checked before a file is opened
    fixed = check_params(fixed)
    check_search(cv, n_jobs, seed)
    check_epochs(epochs, spec)
    if stream and not spec.streams:
        can = ", ".join(n for n, s in heads.HEADS.items() if s.streams)
        raise UsageError(f"{{stream}}: {{head}} {head} holds the embeddings in memory; heads that stream: {can}")
    if paths is None or isinstance(paths, (list, tuple)) and not paths:
        paths = [store.newest_cache(validate.path(embeddings_dir, "embeddings_dir", "a folder of caches"))]
    paths = validate.paths(paths, "paths", "feature caches")
    features = [str(p) for p in paths]
    if spec.always_streams or (spec.streams and (stream or not fits_in_memory(paths))):
        if not (spec.always_streams or stream):
            logging.getLogger(__name__).info("the embeddings would not fit in memory: %s streams them", head)
        with store.CacheRows(paths) as rows:
            return classify_streaming(rows, head, fixed=fixed, class_weight=class_weight, seed=seed, epochs=epochs,
                                      out_dir=out_dir, features=features)
    check_fits_in_memory(paths, head)
    cache = store.concat_caches([store.read_cache(p, verify=True) for p in paths])
    return classify(cache, head, fixed, class_weight=class_weight, cv=cv, n_jobs=n_jobs, seed=seed,
                    out_dir=out_dir, features=features)


def _require_test_rows(path, splits) -> None:
    if not (splits == TEST).any():
        raise CacheError(f"{path}: the cache has no test rows; extract it with a {{split}} "
                         "whose test fraction is above zero")


def _record(fitted, cache, *, proba, y_test, test_ids, predict_seconds, settings: dict, out_dir, features,
            val=None) -> dict:
    """Score the test predictions, write the run folder and append the results row."""
    head = fitted.name
    fixed = settings.get("fixed")
    scores = metrics.score(y_test, proba, cache.class_names)
    attrs = cache.attrs
    resolved = [str(Path(p).resolve()) for p in features or [cache.path]]  # found from any folder later
    meta = {
        "class_names": cache.class_names, "dataset": attrs.get("dataset"), "backbone": attrs.get("backbone"),
        "image_size": attrs.get("image_size"), "pooling": attrs.get("pooling"),
        "tta": attrs.get("tta") or "none", "precision": attrs.get("precision") or "fp32",
        "weights": attrs.get("weights"), "weights_sha256": attrs.get("weights_sha256"),
        "embedding_dim": int(attrs.get("embedding_dim")), "features": resolved,
        "fingerprint": attrs.get("fingerprint"), "seed": attrs.get("seed"), "split": attrs.get("split"),
    }
    config = {"head": head, "params": fitted.params, **settings,
              "fixed": {k: v for k, v in (fixed or {}).items() if v is not None}, **meta}
    extract_seconds = float(attrs.get("seconds", 0.0))
    train_seconds = fitted.search_seconds + fitted.fit_seconds
    n_fit = int(np.isin(cache.splits, (TRAIN, VAL)).sum())
    with runs.run_folder(out_dir, str(attrs.get("dataset")), str(attrs.get("backbone")), head) as run:
        save_head(run.files / RunFiles.HEAD, fitted, meta)
        row = {
            "dataset": attrs.get("dataset"), "backbone": attrs.get("backbone"),
            "image_size": attrs.get("image_size"), "method": METHOD, "head": head, "params": fitted.params,
            **{k: scores[k] for k in metrics.SUMMARY_KEYS}, "per_class": scores["per_class"],
            "cv_accuracy": fitted.cv_accuracy, "extract_seconds": extract_seconds,
            "search_seconds": fitted.search_seconds, "fit_seconds": fitted.fit_seconds,
            "train_seconds": train_seconds, "total_seconds": extract_seconds + train_seconds,
            "predict_seconds": predict_seconds,
            "n_train": n_fit, "n_test": int(len(y_test)),
            "split_counts": {name: int((cache.splits == i).sum()) for i, name in enumerate(SPLITS)},
            "run_dir": str(run.final), "features": meta["features"], "tta": meta["tta"],
        }
        if fitted.passes is not None:  # fitted a block at a time by L-BFGS: its passes over the cache
            row["passes"] = fitted.passes
        if fitted.val_accuracy is not None:
            row["val_accuracy"] = fitted.val_accuracy
        elif val is not None:  # settings chosen by cross-validation on train: val was unseen by the copy
            row["val_accuracy"] = metrics.accuracy(val[1], val[2])
        write_scored(run.files, Scored(
            class_names=cache.class_names, test=(test_ids, y_test, proba), val=val, scores=scores,
            title=f"{head} on {attrs.get('backbone')}: accuracy {scores['accuracy']:.4f}",
            photo_root=attrs.get("source") if attrs.get("source_kind") == "folder" else None,
            record={**row, "metrics": scores, "config": config}, config=config))
    runs.append_result(out_dir, row)
    return {**json.loads(json.dumps(row)), "metrics": scores}
