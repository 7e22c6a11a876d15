"""The results report: RESULTS.md and its plots, and the benchmarks' own sections of BENCHMARKS.md.

RESULTS.md is made from the results table (``runs/results.jsonl``) and what its rows name:
the run folders (per-class figures, validation probabilities, training histories; see
:mod:`.tables`) and, for the embedding maps, the feature caches of the heads chosen on
validation. Nothing in it is typed by hand.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import re
from pathlib import Path

from ..errors import UsageError
from ..io import atomic_write, read_regular, read_system_file
from ..outputs import check_output_file, check_output_folder, write_output
from ..records import plots, runs
from ..records.markdown import markdown_text
from ..records.tables import (
    CURVE,
    SMALL_CNN,
    chosen_on_validation,
    curve_rows,
    few_shot_table,
    label,
    latest_rows,
    per_class,
    time_to_accuracy,
    usable_rows,
    val_accuracy,
)

log = logging.getLogger(__name__)
SHEET_LIMIT = 64 << 20  # bytes of a sheet copied into the report's plots


def environment() -> dict:
    """Machine and library versions of the environment that makes the report."""
    import sklearn
    import tensorflow as tf

    from ..device import library_versions

    cpu = platform.processor() or platform.machine()
    try:
        for line in read_system_file("/proc/cpuinfo").splitlines():
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
    md = markdown_text
    lines += [f"## {md(dataset)}", "",
              "| method | backbone | px | epochs | training s | s/epoch | val accuracy | test accuracy "
              "| macro precision | macro recall | macro F1 | test images |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in chosen:
        lines.append(f"| {md(label(r))} | {md(r.get('backbone'))} | {r.get('image_size')} | "
                     f"{r.get('epochs_run') or '-'} | {_fmt(r.get('total_seconds'), '.1f')} | "
                     f"{_fmt(r.get('seconds_per_epoch'), '.1f')} | {_fmt(val_accuracy(r), '.4f')} | "
                     f"{r['accuracy']:.4f} | {r['precision_macro']:.4f} | {r['recall_macro']:.4f} | "
                     f"{r['f1_macro']:.4f} | {r.get('n_test')} |")
    if not chosen:
        chosen = everything
    scored = [r for r in chosen if val_accuracy(r) is not None]
    if scored:  # "how high can you get?": the method is chosen on val; its test figure is reported once
        best = chosen_on_validation(scored)
        lines += ["", f"How high: chosen on validation accuracy, {md(label(best))} on {md(best.get('backbone'))} "
                      f"(val {val_accuracy(best):.4f}) scored test accuracy {best['accuracy']:.4f}, macro "
                      f"precision {best['precision_macro']:.4f}. Per class: "
                  + ", ".join(f"{md(c)} {v['precision']:.4f}" for c, v in per_class(best).items()) + "."]
        if best.get("method") == "ensemble":
            lines.append("(An ensemble's validation accuracy is that of the set chosen on it, so it is "
                         "optimistic; its test figure is not.)")
    else:
        best = max(chosen, key=lambda r: r["precision_macro"])
        lines += ["", f"Highest macro precision: {best['precision_macro']:.4f} ({md(label(best))}, accuracy "
                      f"{best['accuracy']:.4f}); no run records a validation accuracy to choose by. Per class: "
                  + ", ".join(f"{md(c)} {v['precision']:.4f}" for c, v in per_class(best).items()) + "."]
    tuned = next((r for r in chosen if r["method"] == "finetune" and r.get("unfreeze") != "all"),
                 next((r for r in chosen if r["method"] == "finetune"), None))
    # From scratch, the network that learns is the comparison: the small CNN where there is one (the
    # fine-tuned backbone from scratch may never leave chance on a few thousand photos).
    scratch = next((r for r in chosen if r["method"] == "scratch" and r.get("backbone") == SMALL_CNN),
                   next((r for r in chosen if r["method"] == "scratch"), None))
    frozen = chosen_on_validation([r for r in chosen if r["method"] == "frozen-features"])
    if tuned and scratch and tuned.get("seconds_per_epoch") and scratch.get("seconds_per_epoch"):
        lines.append(f"Training time: fine-tuning {tuned['total_seconds']:.0f} s "
                     f"({tuned['seconds_per_epoch']:.1f} s/epoch, {tuned.get('epochs_run')} epochs) for test "
                     f"accuracy {tuned['accuracy']:.4f}, against {md(label(scratch))} {scratch['total_seconds']:.0f} s "
                     f"({scratch['seconds_per_epoch']:.1f} s/epoch, {scratch.get('epochs_run')} epochs) for "
                     f"{scratch['accuracy']:.4f}.")
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
            lines.append(f"| {md(item['label'])} | {item['best']:.4f} | {item['seconds_to_best']:.1f} | {reach} |")
        lines.append("")
    if frozen and tuned:
        lines.append(f"The frozen-features head chosen on validation, {md(label(frozen))} on "
                     f"{md(frozen.get('backbone'))}, "
                     f"took {frozen['total_seconds']:.0f} s, extraction included "
                     f"({tuned['total_seconds'] / frozen['total_seconds']:.1f}x less than fine-tuning), for test "
                     f"accuracy {frozen['accuracy']:.4f}.")
    table = few_shot_table(everything, [r for r in curve or [] if r.get("dataset") == dataset])
    if any(t["per_class"] is not None for t in table):
        on = " and ".join(map(md, table[0]["curve_backbones"])) or "the cache's"
        lines += ["", "Learning curve: test accuracy against training images per class (the same test "
                      f"images; logistic regression on {on} embeddings, mean and standard deviation over "
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


def markdown(rows: list[dict], images: dict, *, env: dict, source_note: str, curve: list[dict] | None = None) -> str:
    """RESULTS.md: the tables, the course's two answers computed from the rows, the plots."""
    lines = ["# Results", "",
             f"Made by `python report.py` from `runs/results.jsonl` on {env['date']}: {env['cores']} CPU cores "
             f"({env['cpu']}), {env['gpus']} GPU, Python {env['python']}, TensorFlow {env['tensorflow']}, "
             f"scikit-learn {env['scikit-learn']}. {source_note}", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        lines += dataset_section(dataset, rows, curve)
    lines += ["## Plots", ""] + [f"![{markdown_text(title)}]({path})" for title, path in images.items()] + [""]
    return "\n".join(lines)


def file_part(name: str) -> str:
    """A dataset's name as part of a file name: never a path (``a/../b``), never hidden."""
    return re.sub(r"[^\w.-]", "_", name).lstrip(".") or "_"


def _top_losses(best: dict | None, dataset: str, plots_dir: Path, heatmaps: bool = True) -> list[tuple[str, Path]]:
    """The top-losses sheet of the run chosen on validation beside the other plots: drawn again with each photo's
    heatmap (:func:`features.serve.explain.explain_top_losses`) where ``heatmaps`` and the run has maps, else
    the run's own sheet copied (a run folder from before the sheets, or one moved away, has none: nothing is
    shown)."""
    sheet = Path(str(best.get("run_dir", ""))) / runs.RunFiles.TOP_LOSSES if best else None
    if sheet is None or not sheet.is_file():
        return []
    png = plots_dir / f"top_losses_{file_part(dataset)}.png"
    what = " ".join(str(best.get(k)) for k in ("method", "backbone", "head") if best.get(k))
    title = f"{dataset}: the test photos {what} (chosen on validation) got wrong with the highest confidence"
    if heatmaps:
        from ..errors import WeightsUnavailableError
        from ..serve.explain import explain_top_losses

        try:
            found = explain_top_losses(sheet.parent, png)
            return [(f"{title}, with where the network looked ({found['method']})", png)]
        except (UsageError, WeightsUnavailableError) as exc:
            log.warning("%s; the report shows the run's top losses without heatmaps", exc)
    try:
        data = read_regular(sheet, limit=SHEET_LIMIT)
    except OSError as exc:
        log.warning("%s: cannot read the run's top losses (%s); the report goes on without them", sheet, exc)
        return []
    with atomic_write(png, "wb") as f:
        f.write(data)
    return [(title, png)]


def write_report(results_dir="runs", out="RESULTS.md", *, plots_dir="results",
                 source_note: str = "", map_method: str = "tsne", heatmaps: bool = True) -> Path:
    """Read the results table and write the report and its plots.

    Args:
        heatmaps: draw each dataset's top losses with where the network looked (its network is built: seconds);
            False: the run's own sheet as it is.

    Raises:
        UsageError: the table is missing or empty.
    """
    from .. import validate

    validate.path(out, "out", "the report to write")
    validate.path(plots_dir, "plots_dir", "the folder of the plots")
    table = runs.read_results(results_dir)
    curve = curve_rows(table)
    rows = latest_rows(usable_rows([r for r in table if r.get("method") != CURVE]))
    if not rows:
        raise UsageError(f"{results_dir}/{runs.RESULTS_FILE} holds no results; run classify.py or finetune.py first")
    out = Path(out)
    check_output_file(out)  # before the plots are drawn
    plots_dir = check_output_folder(plots_dir, param="plots_dir")
    accuracy_png, precision_png = plots_dir / "accuracy_vs_time.png", plots_dir / "per_class_precision.png"
    if map_method not in plots.MAP_METHODS:
        raise UsageError(f"{{map}} {map_method}: choose {', '.join(plots.MAP_METHODS)}")
    full = [r for r in rows if not r.get("train_per_class")] or rows  # runs on every training image
    plots.plot_accuracy_vs_time(full, accuracy_png)
    plots.plot_per_class_precision(full, precision_png)
    drawn = [("accuracy against training time", accuracy_png), ("per-class precision", precision_png)]
    for dataset in sorted({r["dataset"] for r in rows}):
        png = plots_dir / f"time_to_accuracy_{file_part(dataset)}.png"
        if plots.plot_time_to_accuracy([r for r in rows if r["dataset"] == dataset
                                        and not r.get("train_per_class")], png):
            drawn.append((f"{dataset}: validation accuracy against training seconds", png))
        png = plots_dir / f"learning_curve_{file_part(dataset)}.png"
        mine = [r for r in rows if r["dataset"] == dataset]
        if plots.plot_few_shot(few_shot_table(mine, [r for r in curve if r.get("dataset") == dataset]), dataset, png):
            drawn.append((f"{dataset}: test accuracy against training images per class", png))
    for dataset in sorted({r["dataset"] for r in rows}) if map_method != "none" else []:
        heads = [r for r in full if r["dataset"] == dataset and r.get("method") == "frozen-features"]
        if heads:
            best = chosen_on_validation(heads)
            try:
                png = plots.embedding_map(best, plots_dir / f"embedding_map_{file_part(dataset)}.png",
                                          method=map_method).path
            except UsageError as exc:  # the cache or run folder was moved or deleted: the rest still reports
                log.warning("%s", exc)
                continue
            drawn.append((f"{dataset}: test embeddings of {best.get('backbone')}, {best.get('head')}'s "
                          "mistakes circled", png))
    for dataset in sorted({r["dataset"] for r in rows}):
        drawn += _top_losses(chosen_on_validation([r for r in full if r["dataset"] == dataset]), dataset, plots_dir,
                             heatmaps)
    rel = {name: os.path.relpath(p, out.parent) for name, p in drawn}
    text = markdown(rows, rel, env=environment(), source_note=source_note, curve=curve)
    return write_output(out, lambda f: f.write(text), param="out")
