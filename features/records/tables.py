"""What the results table says: its usable rows, their labels, the method chosen on validation,
time to accuracy and learning curves. The report (:mod:`.report`), its plots (:mod:`.plots`)
and the notebook compute every answer here, from the table's rows and the run folders
they name (:class:`features.records.runs.RunFiles`).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import UsageError
from . import metrics
from .runs import RunFiles

log = logging.getLogger(__name__)

METHOD_ORDER = ("frozen-features", "frozen-in-graph", "finetune", "scratch", "ensemble", "best")
CURVE = "learning-curve"  # benchmarks/course.py's rows of logistic regression on K images per class


SMALL_CNN = "small_cnn"
REPORTED = ("dataset", "accuracy", "precision_macro", "recall_macro", "f1_macro", "total_seconds")


def run_files(row: dict) -> RunFiles:
    """The run folder a results row names.

    Raises:
        UsageError: the row names none.
    """
    folder = row.get("run_dir")
    if not isinstance(folder, str) or not folder:
        raise UsageError("the results row names no run folder")
    return RunFiles(folder)


_in_range = metrics.in_range  # a figure the report can show

# Figures a row may hold and the report may show: each a number in its range, or left out.
OPTIONAL = ("val_accuracy", "cv_accuracy", "seconds_per_epoch", "train_seconds", "seconds_to_best",
            "extract_seconds", "epochs_run", "best_epoch", "n_test", "n_train")


def usable_rows(rows: list[dict]) -> list[dict]:
    """The rows that hold every figure the report shows, checked; others are left out with a warning.

    A row edited by hand, or written by another tool, must not make the whole report fail:
    a row whose headline figures are missing or out of range (an accuracy of 1e308) is left
    out; an optional figure out of range, or per-class figures that are not, are dropped
    from the row (a copy), so nothing the report draws or prints is garbage.
    """
    kept = []
    for n, row in enumerate(rows, 1):
        bad = [k for k in REPORTED if k != "dataset" and not _in_range(row.get(k), k)]
        if not isinstance(row.get("dataset"), str) or not row.get("dataset") or bad:
            log.warning("results row %d lacks %s; it is left out of the report", n,
                        ", ".join(bad) or "its dataset")
            continue
        row = dict(row)
        for key in OPTIONAL:
            if row.get(key) is not None and not _in_range(row[key], key):
                log.warning("results row %d: its %s %r is out of range; it is left out", n, key, row[key])
                row[key] = None
        if "per_class" in row and not _per_class_ok(row["per_class"]):
            log.warning("results row %d: its per-class figures are damaged; they are left out", n)
            row["per_class"] = {}
        kept.append(row)
    return kept


def _per_class_ok(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(name, str) and isinstance(figures, dict)
        and all(_in_range(figures.get(k, 0), k) for k in ("precision", "recall", "f1")) for name, figures in
        value.items())


def latest_rows(rows: list[dict]) -> list[dict]:
    """The newest row of each (dataset, backbone, image size, method and its settings, head, training
    images per class), in a stable order; learning-curve rows are left out (see :func:`curve_rows`).
    A dataset has one ensemble, its newest: an older one averages runs the table has since replaced; and one
    best.py row a time limit, its newest search's."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        if row.get("method") == CURVE:
            continue
        if row.get("method") == "ensemble":
            key = (row.get("dataset"), "ensemble", row.get("train_per_class"))
        elif row.get("method") == "best":  # best.py's newest search of each time limit
            key = (row.get("dataset"), "best", row.get("time_limit"))
        else:
            key = (row.get("dataset"), str(row.get("backbone")), str(row.get("image_size")), label(row),
                   str(row.get("head")), row.get("train_per_class"))
        latest[key] = row  # the table is in time order
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(latest.values(), key=lambda r: (str(r.get("dataset")), order.get(r.get("method"), 9),
                                                  str(r.get("head")), str(r.get("backbone"))))


def per_class(row: dict) -> dict:
    """Per-class figures of a row; rows written before they carried them point to metrics.json."""
    if "per_class" in row:
        return row["per_class"]
    try:
        found = run_files(row).read_metrics()["metrics"]["per_class"]
    except (UsageError, KeyError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def label(row: dict) -> str:
    """The method as the report names it, with the settings that tell two runs of it apart."""
    flip = ", flip TTA" if tta(row) == "flip" else ""
    if row.get("method") == "frozen-features":
        return f"frozen features + {row.get('head')}{' (flip TTA)' if flip else ''}"
    if row.get("method") == "scratch":
        return f"scratch ({row.get('backbone')})"
    if row.get("method") == "ensemble":
        return f"ensemble ({row.get('head')})"
    if row.get("method") == "best":
        return f"best.py ({row.get('head')})"
    if row.get("method") == "finetune" and row.get("unfreeze") == "all":
        recipe = [s for s, on in (("cosine", row.get("schedule") == "cosine"),
                                  ("AdamW", bool(row.get("weight_decay"))),
                                  (f"smoothing {row.get('label_smoothing')}", bool(row.get("label_smoothing"))),
                                  ("RandAugment", row.get("augment") == "strong")) if on]
        return f"finetune (all layers{', ' if recipe else ''}{', '.join(recipe)}{flip})"
    return str(row.get("method")) + (f" ({flip[2:]})" if flip else "")


def tta(row: dict) -> str:
    """The row's test-time augmentation, or its run folder's (config.json) for rows without one."""
    if "tta" in row:
        return str(row["tta"])
    try:
        return str(run_files(row).read_config().get("tta") or "none")
    except UsageError:
        return "none"


def val_accuracy(row: dict) -> float | None:
    """The row's validation accuracy, or its run folder's (probabilities.npz) for rows without one."""
    if "val_accuracy" in row and row["val_accuracy"] is not None:
        return float(row["val_accuracy"]) if _in_range(row["val_accuracy"], "val_accuracy") else None
    try:
        _, splits = run_files(row).read_probabilities()
    except UsageError:
        return None
    _, labels, proba = splits["val"]
    return metrics.accuracy(labels, proba) if len(labels) else None


def chosen_on_validation(rows: list[dict]) -> dict | None:
    """The row of the highest validation accuracy (none counts as 0), the quicker of a tie."""
    return max(rows, key=lambda r: (val_accuracy(r) or 0.0, -float(r.get("total_seconds") or 0)), default=None)


def curve_rows(rows: list[dict]) -> list[dict]:
    """Learning-curve rows of logistic regression (K images per class and seed), in table order."""
    return [r for r in rows if r.get("method") == CURVE and isinstance(r.get("accuracy"), (int, float))]


def learning_curve(row: dict) -> list[tuple[float, float]]:
    """(cumulative training seconds, validation accuracy) after each epoch of a Keras run.

    A frozen-features head is one point: extraction plus search and fit, at the accuracy
    its settings were chosen on (cross-validation on train, or val for a head that
    streams). Empty where the run folder's history is gone.
    """
    if row.get("method") == "frozen-features":
        chosen = val_accuracy(row)
        chosen = row.get("cv_accuracy") if chosen is None else chosen
        return [(float(row["total_seconds"]), float(chosen))] if isinstance(chosen, (int, float)) else []
    try:
        return run_files(row).validation_curve()
    except UsageError:
        return []


def time_to_accuracy(rows: list[dict]) -> tuple[float | None, list[dict]]:
    """Per method: its best validation accuracy, the seconds to it, and the seconds to reach
    the small CNN's plateau (its best validation accuracy; None where there is no small CNN run).

    Returns:
        (the small CNN's plateau, one dict per row with a curve: label, best, seconds_to_best,
        seconds_to_plateau (None: never reached)).
    """
    curves = [(r, learning_curve(r)) for r in rows]
    curves = [(r, c) for r, c in curves if c]
    small = [c for r, c in curves if r.get("backbone") == SMALL_CNN and r.get("method") == "scratch"]
    plateau = max(acc for _, acc in small[0]) if small else None
    table = []
    for row, curve in curves:
        best_seconds, best = max(curve, key=lambda point: (point[1], -point[0]))
        reached = next((sec for sec, acc in curve if plateau is not None and acc >= plateau), None)
        name = label(row) if row.get("method") == "scratch" else f"{label(row)} on {row.get('backbone')}"
        table.append({"label": name, "best": best, "seconds_to_best": best_seconds,
                      "seconds_to_plateau": reached, "curve": curve})
    return plateau, table


def few_shot_table(rows: list[dict], curve: list[dict]) -> list[dict]:
    """One dataset's learning curve: for each K images per class (None: all), logistic regression's
    mean and spread over its seeds, and the test accuracy of fine-tuning and of the small CNN
    trained on K per class (the full-data runs at "all"). Each item also names what its
    columns are: ``curve_backbones`` (the backbones logistic regression ran on) and
    ``finetune_unfreeze`` (the layers the fine-tuning row trained).
    """
    latest: dict[tuple, dict] = {}
    for r in curve:  # the newest row of each (K, seed)
        latest[(r.get("train_per_class"), r.get("seed"))] = r
    keys = {k for k, _ in latest} | {r.get("train_per_class") for r in rows}
    table = []
    for k in sorted(keys, key=lambda k: float("inf") if k is None else k):
        accs = [r["accuracy"] for (kk, _), r in latest.items() if kk == k]
        n = [r.get("n_train") for (kk, _), r in latest.items() if kk == k]

        def pick(pred, k=k):
            found = [r for r in rows if r.get("train_per_class") == k and pred(r)]
            return found[-1] if found else None

        tuned = pick(lambda r: r.get("method") == "finetune" and r.get("unfreeze") != "all"
                     and r.get("tta") in (None, "none"))
        small = pick(lambda r: r.get("method") == "scratch" and r.get("backbone") == SMALL_CNN)
        table.append({
            "per_class": k, "n_train": int(np.mean(n)) if n else None,
            "logreg": float(np.mean(accs)) if accs else None, "logreg_std": float(np.std(accs)) if accs else None,
            "seeds": len(accs), "curve_backbones": sorted({str(r.get("backbone")) for r in latest.values()}),
            "finetune": tuned["accuracy"] if tuned else None,
            "finetune_unfreeze": tuned.get("unfreeze") if tuned else None,
            "small_cnn": small["accuracy"] if small else None})
    return [t for t in table if t["logreg"] is not None or t["per_class"] is not None]


