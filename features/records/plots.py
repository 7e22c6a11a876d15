"""Every plot the toolkit draws: confusion matrices, training curves, the report's plots, the
embedding maps. Each is a matplotlib ``Figure`` (never pyplot: the caller's backend and
figures stay as they are), written whole or not at all as a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.splits import TEST
from ..errors import CacheError, UsageError
from ..io import atomic_write
from .runs import RunFiles
from .tables import label, per_class, time_to_accuracy

MAP_METHODS = ("tsne", "pca", "umap", "none")


def save_png(fig, path, **options) -> None:
    """The figure as a PNG at ``path``, written under a temporary name and renamed."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", **options)


def plot_confusion(confusion, class_names, *, path, title: str = "") -> None:
    """Save the confusion matrix as a PNG (counts, rows true, columns predicted)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.6 * len(class_names) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ConfusionMatrixDisplay(np.asarray(confusion), display_labels=list(class_names)).plot(
        ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


def plot_history(path, history: list[dict], title: str = "") -> None:
    """Training curves: accuracy and loss against wall-clock seconds."""
    from matplotlib.figure import Figure

    t = [row["elapsed"] for row in history]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("accuracy", "loss")):
        ax.plot(t, [row[key] for row in history], "o-", label=f"train {key}")
        ax.plot(t, [row[f"val_{key}"] for row in history], "o-", label=f"val {key}")
        ax.set_xlabel("wall-clock seconds")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


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
            ylabel="validation accuracy", title=f"{rows[0].get('dataset')}: time to accuracy", legend_size=7,
            beside=True)
    return True


def _finish(fig, ax, path, xlabel: str, *, ylabel: str, title: str, legend_size: int = 8, beside=False) -> None:
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
    save_png(fig, path, dpi=110, bbox_inches="tight" if beside else None)  # the legend beside is kept whole


def plot_best_so_far(points: list[dict], path, *, limit: float, title: str) -> None:
    """A budgeted search over time: the best validation accuracy so far against the seconds elapsed, each
    candidate a point (``points``: name, finished_at, val_accuracy, reused), the time limit a dashed line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    done = sorted((p for p in points if p.get("val_accuracy") is not None), key=lambda p: p["finished_at"])
    xs, ys, best = [], [], None
    for p in done:
        best = p["val_accuracy"] if best is None else max(best, p["val_accuracy"])
        xs.append(p["finished_at"])
        ys.append(best)
    if xs:
        ax.step(xs + [max(limit, xs[-1])], ys + [ys[-1]], where="post", label="best validation accuracy so far")
    for p in done:
        ax.scatter(p["finished_at"], p["val_accuracy"], color="tab:orange" if p.get("reused") else "tab:blue",
                   zorder=3, s=18)
        ax.annotate(p["name"], (p["finished_at"], p["val_accuracy"]), fontsize=7, xytext=(4, -10),
                    textcoords="offset points")
    if any(p.get("reused") for p in done):
        ax.scatter([], [], color="tab:orange", s=18, label="reused from an earlier search (at 0 s)")
    ax.axvline(limit, color="grey", linestyle="--", label="time limit")
    _finish(fig, ax, path, "seconds since the start", ylabel="validation accuracy", title=title)


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
    unfreeze = next((t["finetune_unfreeze"] for t in points if t.get("finetune_unfreeze")), None)
    tuned = f"fine-tuning (last {unfreeze} layers)" if unfreeze not in (None, "0") else "fine-tuning"
    for key, name in (("finetune", tuned), ("small_cnn", "small CNN from scratch")):
        xs = [(k, t[key]) for k, t in zip(ks, points) if t[key] is not None]
        if xs:
            ax.plot(*zip(*xs), "s--", label=name)
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _finish(fig, ax, path, "training images per class (log scale)", ylabel="test accuracy",
            title=f"{dataset}: learning curve")
    return True


def plot_accuracy_vs_time(rows: list[dict], path) -> None:
    """Test accuracy against training seconds (extraction included for frozen features)."""
    import matplotlib.ticker
    from matplotlib.figure import Figure

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
    save_png(fig, path, dpi=110)


def plot_per_class_precision(rows: list[dict], path) -> None:
    """Per-class test precision of each method, one panel per dataset."""
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
    save_png(fig, path, dpi=110)




@dataclass
class EmbeddingMap:
    """What :func:`embedding_map` drew: the PNG, the test images it placed, and those it circled."""

    path: Path
    ids: list[str]
    circled: list[str]


def embedding_map(row: dict, path, *, method: str = "tsne", seed: int = 0) -> Path:
    """A 2-D map of a head's test embeddings, coloured by class, its misclassified images marked.

    ``row`` is a frozen-features row of the results table: its cache (``features``) gives
    the test embeddings, its run folder's predictions.csv the images the head got wrong.
    The embeddings are standardised, reduced to 50 dimensions by PCA, then to two by
    t-SNE (scikit-learn), PCA alone, or UMAP (if umap-learn is installed). Seeded.

    Raises:
        UsageError: an unknown method, UMAP not installed, or the cache or run folder gone.

    Returns:
        An :class:`EmbeddingMap`.
    """
    from ..cache import concat_caches, read_cache

    if method not in MAP_METHODS[:-1]:
        raise UsageError(f"{{map}} {method}: choose {', '.join(MAP_METHODS)}")
    try:
        cache = concat_caches([read_cache(p) for p in row["features"]])
        wrong = RunFiles(row["run_dir"]).mistakes()
    except (CacheError, OSError, KeyError, TypeError) as exc:
        raise UsageError(f"no embedding map for {row.get('dataset')}: {exc}") from None
    test = cache.splits == TEST
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
    from matplotlib.figure import Figure

    missed = np.array([i in wrong for i in ids], dtype=bool)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
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
    save_png(fig, path, dpi=110)
    return EmbeddingMap(Path(path), [str(i) for i in ids], [str(i) for i in ids[missed]])


