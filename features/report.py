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

METHOD_ORDER = ("frozen-features", "frozen-in-graph", "finetune", "scratch")


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
    """The newest row of each (dataset, backbone, image size, method, head), in a stable order."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = (row.get("dataset"), str(row.get("backbone")), str(row.get("image_size")), row.get("method"),
               row.get("head"))
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
    if row.get("method") == "frozen-features":
        return f"frozen features + {row.get('head')}"
    if row.get("method") == "scratch":
        return f"scratch ({row.get('backbone')})"
    return str(row.get("method"))


SMALL_CNN = "small_cnn"


def learning_curve(row: dict) -> list[tuple[float, float]]:
    """(cumulative training seconds, validation accuracy) after each epoch of a Keras run.

    A frozen-features head is one point: extraction plus search and fit, at the accuracy
    its settings were chosen on (cross-validation on train, or val for a head that
    streams). Empty where the run folder's history is gone.
    """
    import csv

    if row.get("method") == "frozen-features":
        chosen = row.get("val_accuracy", row.get("cv_accuracy"))
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
        table.append({"label": label(row), "best": best, "seconds_to_best": best_seconds,
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
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for item in table:
        xs, ys = zip(*item["curve"])
        ax.plot(xs, ys, "o-" if len(xs) > 1 else "s", label=item["label"], markersize=4 if len(xs) > 1 else 8)
    if plateau is not None:
        ax.axhline(plateau, color="grey", linestyle="--", linewidth=1, label=f"small CNN's plateau {plateau:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (log scale; extraction included for frozen features)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{rows[0].get('dataset')}: time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def markdown(rows: list[dict], plots: dict, env: dict, source_note: str) -> str:
    """RESULTS.md: the tables, the course's two answers computed from the rows, the plots."""
    lines = ["# Results", "",
             f"Made by `python report.py` from `runs/results.jsonl` on {env['date']}: {env['cores']} CPU cores "
             f"({env['cpu']}), {env['gpus']} GPU, Python {env['python']}, TensorFlow {env['tensorflow']}, "
             f"scikit-learn {env['scikit-learn']}. {source_note}", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        chosen = [r for r in rows if r["dataset"] == dataset]
        lines += [f"## {dataset}", "",
                  "| method | backbone | px | epochs | training s | s/epoch | test accuracy | macro precision "
                  "| macro recall | macro F1 | test images |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in chosen:
            lines.append(f"| {label(r)} | {r.get('backbone')} | {r.get('image_size')} | "
                         f"{r.get('epochs_run') or '-'} | {_fmt(r.get('total_seconds'), '.1f')} | "
                         f"{_fmt(r.get('seconds_per_epoch'), '.1f')} | {r['accuracy']:.4f} | "
                         f"{r['precision_macro']:.4f} | {r['recall_macro']:.4f} | {r['f1_macro']:.4f} | "
                         f"{r.get('n_test')} |")
        best = max(chosen, key=lambda r: r["precision_macro"])
        lines += ["", f"Highest macro precision: {best['precision_macro']:.4f} ({label(best)}, accuracy "
                      f"{best['accuracy']:.4f}). Per class: "
                  + ", ".join(f"{c} {v['precision']:.4f}" for c, v in per_class(best).items()) + "."]
        by_method = {r["method"]: r for r in chosen}
        tuned, scratch = by_method.get("finetune"), by_method.get("scratch")
        if tuned:  # the same network from scratch, where there is one, against the fine-tune
            scratch = next((r for r in chosen if r["method"] == "scratch" and r.get("backbone") == tuned.get(
                "backbone")), scratch)
        frozen = max((r for r in chosen if r["method"] == "frozen-features"), key=lambda r: r["accuracy"],
                     default=None)
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
            lines.append(f"The most accurate frozen-features head, {frozen['head']}, took {frozen['total_seconds']:.0f} s, extraction "
                         f"included ({tuned['total_seconds'] / frozen['total_seconds']:.1f}x less than "
                         f"fine-tuning), for accuracy {frozen['accuracy']:.4f}.")
        lines.append("")
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

    rows = latest_rows(usable_rows(runs.read_results(results_dir)))
    if not rows:
        raise UsageError(f"{results_dir}/{runs.RESULTS_FILE} holds no results; run classify.py or finetune.py first")
    out = Path(out)
    runs.check_output_file(out)  # before the plots are drawn
    plots_dir = runs.check_output_folder(plots_dir, param="plots_dir")
    accuracy_png, precision_png = plots_dir / "accuracy_vs_time.png", plots_dir / "per_class_precision.png"
    if map_method not in MAP_METHODS:
        raise UsageError(f"{{map}} {map_method}: choose {', '.join(MAP_METHODS)}")
    plot_accuracy_vs_time(rows, accuracy_png)
    plot_per_class_precision(rows, precision_png)
    plots = [("accuracy against training time", accuracy_png), ("per-class precision", precision_png)]
    for dataset in sorted({r["dataset"] for r in rows}):
        png = plots_dir / f"time_to_accuracy_{dataset}.png"
        if plot_time_to_accuracy([r for r in rows if r["dataset"] == dataset], png):
            plots.append((f"{dataset}: validation accuracy against training seconds", png))
    for dataset in sorted({r["dataset"] for r in rows}) if map_method != "none" else []:
        heads = [r for r in rows if r["dataset"] == dataset and r.get("method") == "frozen-features"]
        if heads:
            best = max(heads, key=lambda r: r["accuracy"])
            try:
                png = embedding_map(best, plots_dir / f"embedding_map_{dataset}.png", map_method)
            except UsageError as exc:  # the cache or run folder was moved or deleted: the rest still reports
                log.warning("%s", exc)
                continue
            plots.append((f"{dataset}: test embeddings of {best.get('backbone')}, {best.get('head')}'s "
                          "mistakes circled", png))
    rel = {name: os.path.relpath(p, out.parent) for name, p in plots}
    text = markdown(rows, rel, environment(), source_note)
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
