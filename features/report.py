"""The results report: RESULTS.md and its plots, made only from the results table."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
from pathlib import Path

from . import runs

log = logging.getLogger(__name__)

METHOD_ORDER = ("frozen-features", "frozen-in-graph", "finetune", "scratch", "ensemble")
CURVE = "learning-curve"  # benchmarks/course.py's rows of logistic regression on K images per class


REPORTED = ("dataset", "accuracy", "precision_macro", "recall_macro", "f1_macro", "total_seconds")


def usable_rows(rows: list[dict]) -> list[dict]:
    """The rows that hold every figure the report shows; others are left out with a warning.

    A row edited by hand, or written by another tool, must not make the whole report fail.
    """
    import math

    kept = []
    for n, row in enumerate(rows, 1):
        bad = [k for k in REPORTED if k != "dataset" and not (
            isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool) and math.isfinite(row[k]))]
        if not isinstance(row.get("dataset"), str) or bad:
            log.warning("results row %d lacks %s; it is left out of the report", n,
                                                ", ".join(bad) or "its dataset")
            continue
        kept.append(row)
    return kept


def latest_rows(rows: list[dict]) -> list[dict]:
    """The newest row of each (dataset, backbone, image size, method and its settings, head, training
    images per class), in a stable order; learning-curve rows are left out (see :func:`curve_rows`).
    A dataset has one ensemble, its newest: an older one averages runs the table has since replaced."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        if row.get("method") == CURVE:
            continue
        if row.get("method") == "ensemble":
            key = (row.get("dataset"), "ensemble", row.get("train_per_class"))
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
    path = Path(row.get("run_dir", "")) / "metrics.json"
    try:
        return json.loads(path.read_text())["metrics"]["per_class"]
    except (OSError, ValueError, KeyError):
        return {}


def label(row: dict) -> str:
    """The method as the report names it, with the settings that tell two runs of it apart."""
    flip = ", flip TTA" if tta(row) == "flip" else ""
    if row.get("method") == "frozen-features":
        return f"frozen features + {row.get('head')}{' (flip TTA)' if flip else ''}"
    if row.get("method") == "scratch":
        return f"scratch ({row.get('backbone')})"
    if row.get("method") == "ensemble":
        return f"ensemble ({row.get('head')})"
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
        return str(json.loads((Path(row.get("run_dir", "")) / "config.json").read_text()).get("tta") or "none")
    except (OSError, ValueError, AttributeError):
        return "none"


def val_accuracy(row: dict) -> float | None:
    """The row's validation accuracy, or its run folder's (probabilities.npz) for rows without one."""
    import numpy as np

    from . import metrics

    if isinstance(row.get("val_accuracy"), (int, float)):
        return float(row["val_accuracy"])
    try:
        with np.load(Path(row.get("run_dir", "")) / "probabilities.npz") as f:
            return metrics.accuracy(f["val_labels"], f["val_proba"])
    except (OSError, ValueError, KeyError):
        return None


def chosen_on_validation(rows: list[dict]) -> dict | None:
    """The row of the highest validation accuracy (none counts as 0), the quicker of a tie."""
    return max(rows, key=lambda r: (val_accuracy(r) or 0.0, -float(r.get("total_seconds") or 0)), default=None)


def curve_rows(rows: list[dict]) -> list[dict]:
    """Learning-curve rows of logistic regression (K images per class and seed), in table order."""
    return [r for r in rows if r.get("method") == CURVE and isinstance(r.get("accuracy"), (int, float))]


SMALL_CNN = "small_cnn"


def learning_curve(row: dict) -> list[tuple[float, float]]:
    """(cumulative training seconds, validation accuracy) after each epoch of a Keras run.

    A frozen-features head is one point: extraction plus search and fit, at the accuracy
    its settings were chosen on (cross-validation on train, or val for a head that
    streams). Empty where the run folder's history is gone.
    """
    import csv

    if row.get("method") == "frozen-features":
        chosen = val_accuracy(row)
        chosen = row.get("cv_accuracy") if chosen is None else chosen
        return [(float(row["total_seconds"]), float(chosen))] if isinstance(chosen, (int, float)) else []
    try:
        with open(Path(row.get("run_dir", "")) / "history.csv", newline="") as f:
            return [(float(h["elapsed"]), float(h["val_accuracy"])) for h in csv.DictReader(f)
                    if h.get("val_accuracy") not in (None, "")]
    except (OSError, ValueError, KeyError):
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


def plot_time_to_accuracy(rows: list[dict], path) -> bool:
    """Validation accuracy against cumulative training seconds, every method of one dataset.

    Returns:
        False (and draws nothing) where no row has a curve.
    """
    from matplotlib.figure import Figure

    plateau, table = time_to_accuracy(rows)
    if not table:
        return False
    fig = Figure(figsize=(8, 4.5))  # the legend goes beside the curves, not over them
    ax = fig.subplots()
    for item in table:
        xs, ys = zip(*item["curve"])
        ax.plot(xs, ys, "o-" if len(xs) > 1 else "s", label=item["label"], markersize=4 if len(xs) > 1 else 8)
    if plateau is not None:
        ax.axhline(plateau, color="grey", linestyle="--", linewidth=1, label=f"small CNN's plateau {plateau:.3f}")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    lo, hi = ax.get_xlim()  # plain seconds as ticks: a range within a decade or two gets no 3x10^1 labels
    ticks = [t for t in (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000) if lo <= t <= hi]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    _finish(fig, ax, path, "training seconds (log scale; extraction included for frozen features)",
            "validation accuracy", f"{rows[0].get('dataset')}: time to accuracy", legend_size=7, beside=True)
    return True


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str, legend_size: int = 8, beside=False) -> None:
    """Labels, grid and legend (in the lower right, or beside the plot) of a one-panel plot, then the PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if beside:
        ax.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=legend_size, loc="lower right")
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight" if beside else None)  # the legend beside is kept whole


def few_shot_table(rows: list[dict], curve: list[dict]) -> list[dict]:
    """One dataset's learning curve: for each K images per class (None: all), logistic regression's
    mean and spread over its seeds, and the test accuracy of fine-tuning and of the small CNN
    trained on K per class (the full-data runs at "all").
    """
    import numpy as np

    latest: dict[tuple, dict] = {}
    for r in curve:  # the newest row of each (K, seed)
        latest[(r.get("train_per_class"), r.get("seed"))] = r
    keys = {k for k, _ in latest} | {r.get("train_per_class") for r in rows}
    table = []
    for k in sorted(keys, key=lambda k: float("inf") if k is None else k):
        accs = [r["accuracy"] for (kk, _), r in latest.items() if kk == k]
        n = [r.get("n_train") for (kk, _), r in latest.items() if kk == k]

        def pick(pred):
            found = [r for r in rows if r.get("train_per_class") == k and pred(r)]
            return found[-1]["accuracy"] if found else None

        table.append({
            "per_class": k, "n_train": int(np.mean(n)) if n else None,
            "logreg": float(np.mean(accs)) if accs else None, "logreg_std": float(np.std(accs)) if accs else None,
            "seeds": len(accs),
            "finetune": pick(lambda r: r.get("method") == "finetune" and r.get("unfreeze") != "all"
                             and r.get("tta") in (None, "none")),
            "small_cnn": pick(lambda r: r.get("method") == "scratch" and r.get("backbone") == SMALL_CNN)})
    return [t for t in table if t["logreg"] is not None or t["per_class"] is not None]


def plot_few_shot(table: list[dict], dataset: str, path) -> bool:
    """Test accuracy against training images per class (log scale), one line per method."""
    from matplotlib.figure import Figure

    points = [t for t in table if t["per_class"] is not None]
    if not points:
        return False
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ks = [t["per_class"] for t in points]
    lr = [(k, t["logreg"], t["logreg_std"]) for k, t in zip(ks, points) if t["logreg"] is not None]
    if lr:
        ax.errorbar([p[0] for p in lr], [p[1] for p in lr], yerr=[p[2] for p in lr], fmt="o-", capsize=3,
                    label=f"frozen features + logreg (mean, std of {max(t['seeds'] for t in points)} subsamples)")
    for key, name in (("finetune", "fine-tuning (last 40 layers)"), ("small_cnn", "small CNN from scratch")):
        xs = [(k, t[key]) for k, t in zip(ks, points) if t[key] is not None]
        if xs:
            ax.plot(*zip(*xs), "s--", label=name)
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _finish(fig, ax, path, "training images per class (log scale)", "test accuracy", f"{dataset}: learning curve")
    return True


def plot_accuracy_vs_time(rows: list[dict], path) -> None:
    """Test accuracy against training seconds (extraction included for frozen features)."""
    import matplotlib.ticker
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    datasets = sorted({r["dataset"] for r in rows})
    fig = Figure(figsize=(6 * len(datasets), 4.5))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for row in (r for r in rows if r["dataset"] == dataset):
            ax.scatter(row["total_seconds"], row["accuracy"], s=50, label=label(row))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7, loc="lower left")
        ax.set_xlabel("training seconds (log scale; extraction included)")
        ax.set_ylabel("test accuracy")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_per_class_precision(rows: list[dict], path) -> None:
    """Per-class test precision of each method, one panel per dataset."""
    import numpy as np
    from matplotlib.figure import Figure

    datasets = sorted({r["dataset"] for r in rows})
    fig = Figure(figsize=(6 * len(datasets), 5.5))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        chosen = [r for r in rows if r["dataset"] == dataset and per_class(r)]
        if not chosen:
            continue
        classes = list(per_class(chosen[0]))
        width = 0.8 / len(chosen)
        for j, row in enumerate(chosen):
            pc = per_class(row)
            ax.bar(np.arange(len(classes)) + j * width, [pc.get(c, {}).get("precision", 0) for c in classes],
                   width, label=label(row))
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=20)
        ax.set_ylabel("test precision")
        ax.set_ylim(0, 1.05)
        ax.set_title(dataset)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def environment() -> dict:
    """Machine and library versions of the environment that makes the report."""
    import sklearn
    import tensorflow as tf

    from .extraction import library_versions

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {**library_versions(), "scikit-learn": sklearn.__version__, "cpu": cpu, "cores": os.cpu_count(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def dataset_section(dataset: str, rows: list[dict], curve: list[dict] | None = None) -> list[str]:
    """One dataset's part of RESULTS.md (Markdown lines): its table, the method chosen on
    validation and its test figure, time to accuracy against the small CNN's plateau, and
    the learning curve. ``rows`` are :func:`latest_rows`; ``curve`` :func:`curve_rows`.
    """
    lines: list[str] = []
    everything = [r for r in rows if r["dataset"] == dataset]
    chosen = [r for r in everything if not r.get("train_per_class")]  # all training images
    lines += [f"## {dataset}", "",
              "| method | backbone | px | epochs | training s | s/epoch | val accuracy | test accuracy "
              "| macro precision | macro recall | macro F1 | test images |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in chosen:
        lines.append(f"| {label(r)} | {r.get('backbone')} | {r.get('image_size')} | "
                     f"{r.get('epochs_run') or '-'} | {_fmt(r.get('total_seconds'), '.1f')} | "
                     f"{_fmt(r.get('seconds_per_epoch'), '.1f')} | {_fmt(val_accuracy(r), '.4f')} | "
                     f"{r['accuracy']:.4f} | {r['precision_macro']:.4f} | {r['recall_macro']:.4f} | "
                     f"{r['f1_macro']:.4f} | {r.get('n_test')} |")
    if not chosen:
        chosen = everything
    scored = [r for r in chosen if val_accuracy(r) is not None]
    if scored:  # "how high can you get?": the method is chosen on val; its test figure is reported once
        best = chosen_on_validation(scored)
        lines += ["", f"How high: chosen on validation accuracy, {label(best)} on {best.get('backbone')} "
                      f"(val {val_accuracy(best):.4f}) scored test accuracy {best['accuracy']:.4f}, macro "
                      f"precision {best['precision_macro']:.4f}. Per class: "
                  + ", ".join(f"{c} {v['precision']:.4f}" for c, v in per_class(best).items()) + "."]
        if best.get("method") == "ensemble":
            lines.append("(An ensemble's validation accuracy is that of the set chosen on it, so it is "
                         "optimistic; its test figure is not.)")
    else:
        best = max(chosen, key=lambda r: r["precision_macro"])
        lines += ["", f"Highest macro precision: {best['precision_macro']:.4f} ({label(best)}, accuracy "
                      f"{best['accuracy']:.4f}); no run records a validation accuracy to choose by. Per class: "
                  + ", ".join(f"{c} {v['precision']:.4f}" for c, v in per_class(best).items()) + "."]
    by_method = {r["method"]: r for r in chosen}
    tuned, scratch = by_method.get("finetune"), by_method.get("scratch")
    tuned = next((r for r in chosen if r["method"] == "finetune" and r.get("unfreeze") != "all"), tuned)
    if tuned:  # the same network from scratch, where there is one, against the fine-tune
        scratch = next((r for r in chosen if r["method"] == "scratch" and r.get("backbone") == tuned.get(
            "backbone")), scratch)
    frozen = chosen_on_validation([r for r in chosen if r["method"] == "frozen-features"])
    if tuned and scratch:
        lines.append(f"Training time: fine-tuning {tuned['total_seconds']:.0f} s "
                     f"({tuned['seconds_per_epoch']:.1f} s/epoch) against {scratch['total_seconds']:.0f} s "
                     f"from scratch ({scratch['seconds_per_epoch']:.1f} s/epoch, "
                     f"{scratch['seconds_per_epoch'] / tuned['seconds_per_epoch']:.1f}x per epoch), for test "
                     f"accuracy {tuned['accuracy']:.4f} against {scratch['accuracy']:.4f}.")
    plateau, table = time_to_accuracy(chosen)
    if table:
        target = f"the small CNN's plateau ({plateau:.4f})" if plateau is not None else "the small CNN's plateau"
        lines += ["", "Time to accuracy (validation; frozen features: the accuracy their settings were "
                      "chosen on):", "",
                  f"| method | best val accuracy | seconds to it | seconds to reach {target} |",
                  "|---|---|---|---|"]
        for item in table:
            reach = ("no small CNN run" if plateau is None else
                     f"{item['seconds_to_plateau']:.1f}" if item["seconds_to_plateau"] is not None
                     else "never reached")
            lines.append(f"| {item['label']} | {item['best']:.4f} | {item['seconds_to_best']:.1f} | {reach} |")
        lines.append("")
    if frozen and tuned:
        lines.append(f"The frozen-features head chosen on validation, {label(frozen)} on {frozen.get('backbone')}, "
                     f"took {frozen['total_seconds']:.0f} s, extraction included "
                     f"({tuned['total_seconds'] / frozen['total_seconds']:.1f}x less than fine-tuning), for test "
                     f"accuracy {frozen['accuracy']:.4f}.")
    table = few_shot_table(everything, [r for r in curve or [] if r.get("dataset") == dataset])
    if any(t["per_class"] is not None for t in table):
        lines += ["", "Learning curve: test accuracy against training images per class (the same test "
                      "images; logistic regression on Lite0's embeddings, mean and standard deviation over "
                      "seeded subsamples, its settings chosen by cross-validation on the K images alone):", "",
                  "| images per class | training images | frozen features + logreg | fine-tuning | "
                  "small CNN from scratch |", "|---|---|---|---|---|"]
        for t in table:
            lr = (f"{t['logreg']:.4f} ± {t['logreg_std']:.4f} ({t['seeds']})" if t["logreg"] is not None
                  else "-")
            lines.append(f"| {'all' if t['per_class'] is None else t['per_class']} | {_fmt(t['n_train'], 'd')} | "
                         f"{lr} | {_fmt(t['finetune'], '.4f')} | {_fmt(t['small_cnn'], '.4f')} |")
    lines.append("")
    return lines


def markdown(rows: list[dict], plots: dict, env: dict, source_note: str, curve: list[dict] | None = None) -> str:
    """RESULTS.md: the tables, the course's two answers computed from the rows, the plots."""
    lines = ["# Results", "",
             f"Made by `python report.py` from `runs/results.jsonl` on {env['date']}: {env['cores']} CPU cores "
             f"({env['cpu']}), {env['gpus']} GPU, Python {env['python']}, TensorFlow {env['tensorflow']}, "
             f"scikit-learn {env['scikit-learn']}. {source_note}", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        lines += dataset_section(dataset, rows, curve)
    lines += ["## Plots", ""] + [f"![{title}]({path})" for title, path in plots.items()] + [""]
    return "\n".join(lines)


MAP_METHODS = ("tsne", "pca", "umap", "none")


def embedding_map(row: dict, path, method: str = "tsne", seed: int = 0) -> Path:
    """A 2-D map of a head's test embeddings, coloured by class, its misclassified images marked.

    ``row`` is a frozen-features row of the results table: its cache (``features``) gives
    the test embeddings, its run folder's predictions.csv the images the head got wrong.
    The embeddings are standardised, reduced to 50 dimensions by PCA, then to two by
    t-SNE (scikit-learn), PCA alone, or UMAP (if umap-learn is installed). Seeded.

    Raises:
        UsageError: an unknown method, UMAP not installed, or the cache or run folder gone.
    """
    import csv

    import numpy as np

    from .errors import CacheError, UsageError
    from .store import concat_caches, read_cache

    if method not in MAP_METHODS[:-1]:
        raise UsageError(f"{{map}} {method}: choose {', '.join(MAP_METHODS)}")
    try:
        cache = concat_caches([read_cache(p) for p in row["features"]])
        with open(Path(row["run_dir"]) / "predictions.csv", newline="") as f:
            wrong = {r["id"] for r in csv.DictReader(f) if r["true"] != r["predicted"]}
    except (CacheError, OSError, KeyError, TypeError) as exc:
        raise UsageError(f"no embedding map for {row.get('dataset')}: {exc}") from None
    test = cache.splits == 2
    X, y, ids = cache.embeddings[test], cache.labels[test], cache.ids[test]
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(X)
    X = PCA(min(50, *X.shape), random_state=seed).fit_transform(X)
    if method == "tsne":
        from sklearn.manifold import TSNE

        xy = TSNE(2, perplexity=min(30.0, (len(X) - 1) / 3), init="pca", random_state=seed).fit_transform(X)
    elif method == "umap":
        try:
            import umap
        except ImportError:
            raise UsageError("{map=umap} needs umap-learn: pip install umap-learn (or use tsne)") from None
        xy = umap.UMAP(random_state=seed).fit_transform(X)
    else:
        xy = X[:, :2]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missed = np.array([i in wrong for i in ids], dtype=bool)
    fig, ax = plt.subplots(figsize=(7, 6))
    for k, name in enumerate(cache.class_names):
        mine = y == k
        ax.scatter(xy[mine, 0], xy[mine, 1], s=12, alpha=0.7, label=name)
    ax.scatter(xy[missed, 0], xy[missed, 1], s=60, facecolors="none", edgecolors="black", linewidths=1.2,
               label=f"misclassified by {row.get('head')} ({int(missed.sum())})")
    ax.set_title(f"{row.get('dataset')}: {row.get('backbone')} test embeddings ({method}, {len(X)} images)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(results_dir="runs", out="RESULTS.md", plots_dir="results",
                 source_note: str = "", map_method: str = "tsne") -> Path:
    """Read the results table and write the report and its plots.

    Raises:
        UsageError: the table is missing or empty.
    """
    from .errors import UsageError

    table = runs.read_results(results_dir)
    curve = curve_rows(table)
    rows = latest_rows(usable_rows([r for r in table if r.get("method") != CURVE]))
    if not rows:
        raise UsageError(f"{results_dir}/{runs.RESULTS_FILE} holds no results; run classify.py or finetune.py first")
    out = Path(out)
    runs.check_output_file(out)  # before the plots are drawn
    plots_dir = runs.check_output_folder(plots_dir, param="plots_dir")
    accuracy_png, precision_png = plots_dir / "accuracy_vs_time.png", plots_dir / "per_class_precision.png"
    if map_method not in MAP_METHODS:
        raise UsageError(f"{{map}} {map_method}: choose {', '.join(MAP_METHODS)}")
    full = [r for r in rows if not r.get("train_per_class")] or rows  # runs on every training image
    plot_accuracy_vs_time(full, accuracy_png)
    plot_per_class_precision(full, precision_png)
    plots = [("accuracy against training time", accuracy_png), ("per-class precision", precision_png)]
    for dataset in sorted({r["dataset"] for r in rows}):
        png = plots_dir / f"time_to_accuracy_{dataset}.png"
        if plot_time_to_accuracy([r for r in rows if r["dataset"] == dataset and not r.get("train_per_class")], png):
            plots.append((f"{dataset}: validation accuracy against training seconds", png))
        png = plots_dir / f"learning_curve_{dataset}.png"
        mine = [r for r in rows if r["dataset"] == dataset]
        if plot_few_shot(few_shot_table(mine, [r for r in curve if r.get("dataset") == dataset]), dataset, png):
            plots.append((f"{dataset}: test accuracy against training images per class", png))
    for dataset in sorted({r["dataset"] for r in rows}) if map_method != "none" else []:
        heads = [r for r in full if r["dataset"] == dataset and r.get("method") == "frozen-features"]
        if heads:
            best = chosen_on_validation(heads)
            try:
                png = embedding_map(best, plots_dir / f"embedding_map_{dataset}.png", map_method)
            except UsageError as exc:  # the cache or run folder was moved or deleted: the rest still reports
                log.warning("%s", exc)
                continue
            plots.append((f"{dataset}: test embeddings of {best.get('backbone')}, {best.get('head')}'s "
                          "mistakes circled", png))
    rel = {name: os.path.relpath(p, out.parent) for name, p in plots}
    text = markdown(rows, rel, environment(), source_note, curve)
    return runs.write_output(out, lambda f: f.write(text), param="out")


def write_printed_section(path, name: str, heading: str, intro: str, lines: list[str]) -> None:
    """A benchmark's own section of BENCHMARKS.md: a heading, a sentence, then its lines as printed."""
    replace_section(path, name, f"## {heading}\n\n{intro}:\n\n```\n" + "\n".join(lines) + "\n```")


def replace_section(path, name: str, text: str) -> None:
    """Put ``text`` between the markers of section ``name`` in the Markdown file ``path``.

    The markers are ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->``; a section
    not yet there is appended. Written to a temporary name and renamed. Benchmarks that
    own a section of BENCHMARKS.md write it this way, and leave the others as they are.
    """
    import re

    path = Path(path)
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(new)
    os.replace(tmp, path)
