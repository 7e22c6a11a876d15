"""A fitted head's scored run: its run folder (through :func:`features.records.scored.write_scored`) and its row
of the results table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..cache import photo_root
from ..data.splits import SPLITS, TRAIN, VAL
from ..records import metrics, runs
from ..records.runs import RunFiles
from ..records.scored import Scored, write_scored
from .files import save_head

METHOD = "frozen-features"


def record_run(fitted, cache, *, test, predict_seconds, settings: dict, out_dir, features, val=None,
               corrections=None) -> dict:
    """Score the test predictions (``test``: ids, labels, probabilities), write the run folder and append the
    results row (with the :class:`~features.data.corrections.Applied` corrections' record, where given)."""
    head = fitted.name
    test_ids, y_test, proba = test
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
        if corrections is not None:
            row["corrections"] = corrections.record
        if fitted.passes is not None:  # fitted a block at a time by L-BFGS: its passes over the cache
            row["passes"] = fitted.passes
        if fitted.val_accuracy is not None:
            row["val_accuracy"] = fitted.val_accuracy
        elif val is not None:  # settings chosen by cross-validation on train: val was unseen by the copy
            row["val_accuracy"] = metrics.accuracy(val[1], val[2])
        write_scored(run.files, Scored(
            class_names=cache.class_names, test=(test_ids, y_test, proba), val=val, scores=scores,
            title=f"{head} on {attrs.get('backbone')}: accuracy {scores['accuracy']:.4f}",
            photo_root=photo_root(attrs),
            record={**row, "metrics": scores, "config": config}, config=config))
    runs.append_result(out_dir, row)
    return {**json.loads(json.dumps(row)), "metrics": scores}
