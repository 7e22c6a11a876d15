"""Fit a head on a feature cache, score it on the test split, record the run."""

from __future__ import annotations

import json
import time

from . import heads, metrics, runs
from .data.splits import SPLITS, TEST
from .errors import CacheError
from .store import FeatureCache

METHOD = "frozen-features"


def classify(cache: FeatureCache, head: str, fixed: dict | None = None, class_weight: str | None = None,
             cv: int = 5, n_jobs: int | None = -1, seed: int = 0, out_dir="runs",
             features=None) -> dict:
    """Train ``head`` on the cache's train (+ val) rows and score it on its test rows.

    Writes a run folder (head.skops, metrics.json, report.txt, confusion.png) under
    ``out_dir`` and appends one row to the results table.

    Returns:
        The row appended to the results table, plus "metrics" (see :func:`features.metrics.score`).
    """
    runs.check_output_folder(out_dir)
    if not (cache.splits == TEST).any():
        raise CacheError(f"{cache.path}: the cache has no test rows; extract it with a {{split}} "
                         "whose test fraction is above zero")
    X_train, y_train = cache.split("train")
    X_val, y_val = cache.split("val")
    X_test, y_test = cache.split("test")
    fitted = heads.fit_head(head, X_train, y_train, X_val, y_val, fixed=fixed, class_weight=class_weight,
                            cv=cv, n_jobs=n_jobs, seed=seed)
    start = time.perf_counter()
    proba = fitted.predict_proba(X_test)
    predict_seconds = time.perf_counter() - start
    scores = metrics.score(y_test, proba, cache.class_names)
    attrs = cache.attrs
    meta = {
        "class_names": cache.class_names, "dataset": attrs.get("dataset"), "backbone": attrs.get("backbone"),
        "image_size": attrs.get("image_size"), "pooling": attrs.get("pooling"),
        "weights": attrs.get("weights"), "weights_sha256": attrs.get("weights_sha256"),
        "embedding_dim": int(cache.embeddings.shape[1]), "features": features or [str(cache.path)],
        "fingerprint": attrs.get("fingerprint"), "seed": attrs.get("seed"), "split": attrs.get("split"),
    }
    config = {"head": head, "params": fitted.params, "fixed": {k: v for k, v in (fixed or {}).items() if v is not None},
              "class_weight": class_weight, "cv": cv, "seed": seed, **meta}
    extract_seconds = float(attrs.get("seconds", 0.0))
    train_seconds = fitted.search_seconds + fitted.fit_seconds
    with runs.run_folder(out_dir, str(attrs.get("dataset")), str(attrs.get("backbone")), head) as run:
        heads.save_head(run.path / "head.skops", fitted, meta)
        (run.path / "report.txt").write_text(metrics.report_text(y_test, proba, cache.class_names))
        metrics.write_predictions(run.path / "predictions.csv", cache.ids[cache.splits == TEST], y_test, proba,
                                  cache.class_names)
        metrics.plot_confusion(scores["confusion_matrix"], cache.class_names, run.path / "confusion.png",
                               f"{head} on {attrs.get('backbone')}: accuracy {scores['accuracy']:.4f}")
        row = {
            "dataset": attrs.get("dataset"), "backbone": attrs.get("backbone"),
            "image_size": attrs.get("image_size"), "method": METHOD, "head": head, "params": fitted.params,
            **{k: scores[k] for k in metrics.SUMMARY_KEYS}, "per_class": scores["per_class"],
            "cv_accuracy": fitted.cv_accuracy, "extract_seconds": extract_seconds,
            "search_seconds": fitted.search_seconds, "fit_seconds": fitted.fit_seconds,
            "train_seconds": train_seconds, "total_seconds": extract_seconds + train_seconds,
            "predict_seconds": predict_seconds,
            "n_train": int(len(y_train) + len(y_val)), "n_test": int(len(y_test)),
            "split_counts": {name: int((cache.splits == i).sum()) for i, name in enumerate(SPLITS)},
            "run_dir": str(run.final), "features": meta["features"],
        }
        runs.write_json(run.path / "metrics.json", {**row, "metrics": scores, "config": config})
        runs.write_json(run.path / "config.json", config)
    runs.append_result(out_dir, row)
    return {**json.loads(json.dumps(row)), "metrics": scores}
