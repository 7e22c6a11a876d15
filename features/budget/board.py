"""The leaderboard of a budgeted search: its candidates, the one chosen, written as CSV, Markdown and a plot;
and the journal of finished steps a later search over the same photos starts from."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..io import append_line, read_text
from ..records import markdown as md
from ..records.plots import plot_best_so_far
from ..records.runs import RunFiles

log = logging.getLogger(__name__)

JOURNAL = "best-steps.jsonl"
COLUMNS = ("chosen", "candidate", "method", "backbone", "val_accuracy", "val_loss", "test_accuracy", "seconds",
           "finished_at", "reused", "run_dir")


@dataclass(kw_only=True)
class Candidate:
    """One finished step: a run folder scored on validation and (shown, never used to choose) on test."""

    name: str  # "efficientnet_lite0 logreg", "efficientnet_lite0 views x8 finetune", "ensemble (weighted)"
    method: str
    backbone: str
    run_dir: str
    val_accuracy: float | None
    test_accuracy: float | None
    seconds: float  # this step's own, extraction included (a reused step: what it took when it ran)
    val_loss: float | None = None  # the validation log loss: ties of accuracy go to the lower
    finished_at: float = 0.0  # seconds into this search when it finished (0 for a reused one)
    reused: bool = False
    note: str = ""

    @classmethod
    def from_row(cls, name: str, row: dict, *, seconds: float, finished_at: float, note: str = "",
                 val_loss: float | None = None) -> "Candidate":
        """``row``: a run's results row; ``val_loss`` None: read from its run folder's probabilities."""
        if val_loss is None:
            val_loss = validation_loss(row["run_dir"])
        return cls(name=name, method=str(row.get("method")), backbone=str(row.get("backbone")),
                   run_dir=str(row["run_dir"]), val_accuracy=row.get("val_accuracy"),
                   test_accuracy=row.get("accuracy"), seconds=seconds, finished_at=finished_at, note=note,
                   val_loss=val_loss)


def validation_loss(run_dir) -> float | None:
    """The log loss of a run folder's validation probabilities (None without them)."""
    from ..errors import UsageError
    from ..records.metrics import log_loss

    try:
        _, splits = RunFiles(run_dir).read_probabilities()
    except UsageError:
        return None
    _, labels, proba = splits["val"]
    return log_loss(labels, proba) if len(labels) else None


def rank(candidates) -> list[Candidate]:
    """The candidates best first: the highest validation accuracy; of a tie, the lower validation log loss, then
    the one found first (the cheaper step). The test accuracy plays no part."""
    candidates = list(candidates)
    return sorted(candidates, key=lambda c: (-(c.val_accuracy if c.val_accuracy is not None else -1.0),
                                             c.val_loss if c.val_loss is not None else np.inf,
                                             candidates.index(c)))


def choose(candidates: list[Candidate]) -> Candidate:
    """The first of :func:`rank`."""
    return rank(candidates)[0]


def board_rows(candidates: list[Candidate], chosen: Candidate) -> list[dict]:
    """The leaderboard's rows, in the order of the choice: the best on validation first."""
    ranked = rank(candidates)
    return [{"chosen": "*" if c is chosen else "", "candidate": c.name, "method": c.method, "backbone": c.backbone,
             "val_accuracy": c.val_accuracy, "val_loss": c.val_loss, "test_accuracy": c.test_accuracy,
             "seconds": round(c.seconds, 1), "finished_at": round(c.finished_at, 1), "reused": c.reused,
             "run_dir": c.run_dir} for c in ranked]


def _figure(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def board_text(rows: list[dict]) -> str:
    """The leaderboard as the terminal shows it."""
    lines = [f"  {'candidate':46s} {'val':>6s} {'val loss':>8s} {'test':>6s} {'seconds':>8s}"]
    for r in rows:
        lines.append(f"{r['chosen'] or ' '} {r['candidate']:46s} {_figure(r['val_accuracy']):>6s} "
                     f"{_figure(r['val_loss']):>8s} {_figure(r['test_accuracy']):>6s} {r['seconds']:8.1f}"
                     f"{'  (reused)' if r['reused'] else ''}")
    return "\n".join(lines)


def board_markdown(rows: list[dict], *, title: str) -> str:
    lines = [f"# {md.markdown_text(title)}", "",
             "| | candidate | method | backbone | val accuracy | val log loss | test accuracy | seconds | run folder |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'**chosen**' if r['chosen'] else ''} | {md.markdown_text(r['candidate'])} | "
                     f"{md.markdown_text(r['method'])} | {md.markdown_text(r['backbone'])} | "
                     f"{_figure(r['val_accuracy'])} | {_figure(r['val_loss'])} | {_figure(r['test_accuracy'])} | "
                     f"{r['seconds']:.1f}"
                     f"{' (reused)' if r['reused'] else ''} | {md.markdown_text(Path(r['run_dir']).name)} |")
    lines += ["", "Chosen on validation accuracy (ties: the lower validation log loss); the test accuracy is shown, "
                  "never used to choose. An ensemble's validation figures are held out: each photo scored by a set "
                  "chosen on the other half."]
    return "\n".join(lines) + "\n"


def write_board(files: RunFiles, rows: list[dict], *, title: str, candidates: list[Candidate], limit: float) -> None:
    """leaderboard.csv, leaderboard.md and time.png (:func:`~features.records.plots.plot_best_so_far`) into the
    search's run folder."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    files.write_text("leaderboard.csv", out.getvalue())
    files.write_text("leaderboard.md", board_markdown(rows, title=title))
    plot_best_so_far([asdict(c) for c in candidates], files / "time.png", limit=limit, title=title)


class Journal:
    """Finished steps of searches over the same photos, one JSON line each in ``out_dir``/best-steps.jsonl, so
    a search with a bigger budget starts where an earlier one ended. A step is found again by its key (the
    photos' listing, split and the step's settings); its run folder must still be there."""

    def __init__(self, out_dir, listing: dict):
        self.path = Path(out_dir) / JOURNAL
        self.listing = listing

    def key(self, step: dict) -> str:
        text = json.dumps({**self.listing, **step}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def find(self, step: dict) -> Candidate | None:
        if not self.path.is_file():
            return None
        key, found = self.key(step), None
        try:
            lines = read_text(self.path).splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s cannot be read (%s): no step is reused", self.path, exc)
            return None
        for line in lines:
            try:
                entry = json.loads(line)
                if entry.get("key") == key:
                    found = Candidate(**entry["candidate"])
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # a damaged line: that step runs again
        if found is None or not (RunFiles(found.run_dir) / RunFiles.METRICS).is_file():
            return None
        found.reused, found.finished_at = True, 0.0
        return found

    def record(self, step: dict, candidate: Candidate) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line(self.path, json.dumps({"key": self.key(step), "candidate": asdict(candidate)},
                                          sort_keys=True) + "\n", what="this step's line")
