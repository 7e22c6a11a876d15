"""A head on feature caches, scored once on the test split and recorded: :func:`classify` reads the caches the
way the head needs (in memory, or a block of rows at a time where it streams or the matrix would not fit),
:func:`classify_cache` and :func:`classify_streaming` fit and score, :func:`.record.record_run` writes the run."""

from __future__ import annotations

import time

from .. import validate
from ..cache import FeatureCache, photo_root
from ..data.corrections import Corrections, apply_corrections, read_corrections
from ..data.splits import TEST, VAL
from ..errors import CacheError, UsageError
from ..outputs import check_output_folder
from ..records.metrics import accuracy
from .memory import check_fits_in_memory, fits_in_memory
from .params import check_epochs, check_params, check_search
from .record import record_run
from .registry import HEADS, get_head_spec, make_head
from .search import fit_head, fit_streamed


def classify_cache(cache: FeatureCache, head: str, *, fixed: dict | None = None, class_weight: str | None = None,
                   cv: int = 5, n_jobs: int | None = -1, seed: int = 0, out_dir="runs",
                   features=None, corrections: Corrections | None = None) -> dict:
    """Train ``head`` on the cache's train (+ val) rows and score it on its test rows.

    Writes a run folder (head.skops, metrics.json, report.txt, confusion.png) under
    ``out_dir`` and appends one row to the results table.

    Args:
        corrections: applied to the cache's rows first (:func:`features.data.corrections.apply_corrections`); the
            run records them, and the test accuracy on the uncorrected test split beside the corrected one.

    Returns:
        The row appended to the results table, plus "metrics" (see :func:`features.records.metrics.score`).
    """
    check_output_folder(out_dir)
    original, applied = cache, None
    if corrections is not None:
        applied = apply_corrections(corrections, ids=cache.ids, labels=cache.labels, class_names=cache.class_names,
                                    photo_root=photo_root(cache.attrs))
        cache = cache.corrected(applied)
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
        held_out = make_head(head, fitted.params, class_weight=class_weight, seed=seed, probability=True,
                             n_jobs=n_jobs, calibration=fitted.calibration)
        val = (cache.ids[cache.splits == VAL], y_val, held_out.fit(X_train, y_train).predict_proba(X_val))
    if applied is not None:
        X_all, y_all = original.split("test")
        applied = applied.with_uncorrected(accuracy=accuracy(y_all, fitted.predict_proba(X_all)), n_test=len(y_all))
    return record_run(fitted, cache, test=(cache.ids[cache.splits == TEST], y_test, proba),
                      predict_seconds=predict_seconds, out_dir=out_dir, features=features, val=val,
                      settings={"fixed": fixed, "class_weight": class_weight, "cv": cv, "seed": seed},
                      corrections=applied)


def classify_streaming(rows, head: str, *, fixed: dict | None = None, class_weight: str | None = None,
                       seed: int = 0, epochs: int | None = None, out_dir="runs", features=None,
                       corrections: Corrections | None = None) -> dict:
    """:func:`classify_cache`, a block of rows at a time (:func:`fit_streamed`), on a
    :class:`features.cache.CacheRows`: settings chosen on the validation split, memory
    independent of the number of rows. ``corrections`` as :func:`classify_cache`'s: a removed row's split
    becomes :data:`~features.data.corrections.REMOVED`, which no split selects.
    """
    from .blocks import predict_split

    check_output_folder(out_dir)
    original, applied = (rows.labels, rows.splits), None
    if corrections is not None:
        applied = apply_corrections(corrections, ids=rows.ids(0, rows.n), labels=rows.labels,
                                    class_names=rows.class_names, photo_root=photo_root(rows.attrs))
        rows.labels, rows.splits = applied.labels, applied.splits(rows.splits)
    _require_test_rows(rows.path, rows.splits)
    fitted = fit_streamed(head, rows, fixed=fixed, class_weight=class_weight, seed=seed, epochs=epochs)
    start = time.perf_counter()
    proba, y_test, ids = predict_split(fitted, rows, TEST)
    predict_seconds = time.perf_counter() - start
    if applied is not None:
        corrected, (rows.labels, rows.splits) = (rows.labels, rows.splits), original
        all_proba, y_all, _ = predict_split(fitted, rows, TEST)
        applied = applied.with_uncorrected(accuracy=accuracy(y_all, all_proba), n_test=len(y_all))
        rows.labels, rows.splits = corrected
    return record_run(fitted, rows, test=(ids, y_test, proba), predict_seconds=predict_seconds,
                      out_dir=out_dir, features=features, val=fitted.val,
                      settings={"fixed": fixed, "class_weight": class_weight, "epochs": epochs, "seed": seed},
                      corrections=applied)


def classify(paths=None, head: str = "logreg", *, fixed: dict | None = None, stream: bool = False,
             class_weight: str | None = None, cv: int = 5, n_jobs: int | None = -1, seed: int = 0,
             epochs: int | None = None, out_dir="runs", embeddings_dir="embeddings", corrections=None) -> dict:
    """A head on the caches at ``paths`` (several are joined side by side), scored once on their test rows.

    ``paths`` None: the cache extracted or re-used last under ``embeddings_dir``. ``corrections``: the path of a
    corrections file (:mod:`features.data.corrections`), applied to the cache's rows; the cache itself is used as
    it is (relabelling needs no new extraction).

    The one policy for how the caches are read: a head that always streams (sgd) reads them a block
    of rows at a time; one that can (logreg) does so when ``stream`` is set or when the matrix would not
    fit in memory; the others load them, after a check that they fit, every row verified.

    Returns:
        As :func:`classify_cache`; a streamed fit adds "passes".

    Raises:
        UsageError: ``stream`` for a head that cannot stream, or caches too large for an in-memory head.
    """
    import logging

    from ..cache import CacheRows, concat_caches, newest_cache, read_cache

    spec = get_head_spec(head)  # every setting checked before a file is opened
    fixed = check_params(fixed)
    check_search(cv, n_jobs, seed)
    check_epochs(epochs, spec)
    if corrections is not None:
        corrections = read_corrections(corrections)
    if stream and not spec.streams:
        can = ", ".join(n for n, s in HEADS.items() if s.streams)
        raise UsageError(f"{{stream}}: {{head}} {head} holds the embeddings in memory; heads that stream: {can}")
    if paths is None or isinstance(paths, (list, tuple)) and not paths:
        paths = [newest_cache(validate.path(embeddings_dir, "embeddings_dir", "a folder of caches"))]
    paths = validate.paths(paths, "paths", "feature caches")
    features = [str(p) for p in paths]
    if spec.always_streams or (spec.streams and (stream or not fits_in_memory(paths))):
        if not (spec.always_streams or stream):
            logging.getLogger(__name__).info("the embeddings would not fit in memory: %s streams them", head)
        with CacheRows(paths) as rows:
            return classify_streaming(rows, head, fixed=fixed, class_weight=class_weight, seed=seed, epochs=epochs,
                                      out_dir=out_dir, features=features, corrections=corrections)
    check_fits_in_memory(paths, head)
    cache = concat_caches([read_cache(p, verify=True) for p in paths])
    return classify_cache(cache, head, fixed=fixed, class_weight=class_weight, cv=cv, n_jobs=n_jobs, seed=seed,
                          out_dir=out_dir, features=features, corrections=corrections)


def _require_test_rows(path, splits) -> None:
    if not (splits == TEST).any():
        raise CacheError(f"{path}: the cache has no test rows; extract it with a {{split}} "
                         "whose test fraction is above zero")
