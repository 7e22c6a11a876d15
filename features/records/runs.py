"""Run folders and the one results table every script appends to: the owner of both formats.

Layout under the outputs folder (default ``runs/``)::

    runs/results.jsonl                 one JSON object per run (the report's table)
    runs/<time>-<dataset>-<backbone>-<method>/   a run folder

A run folder (:class:`RunFiles` names, writes and reads every file in it; a scored run's files are
written by one writer, :func:`features.records.scored.write_scored`, whatever made the run)::

    config.json         the resolved settings of the run (every run but an ensemble)
    metrics.json        its results row, with "metrics" (every score) and "config"
    report.txt          scikit-learn's per-class report of the test images
    predictions.csv     id, true, predicted, p_<class>... of each test image
    probabilities.npz   class_names (C,); {val,test}_ids (n,) str, {val,test}_labels (n,) int64,
                        {val,test}_proba (n, C) float32 of the validation and test images:
                        what ensembles average (a head's val probabilities come from a copy
                        fitted on train alone)
    confusion.png       the test confusion matrix
    top_losses.png      the test photos wrong with the highest confidence, the classes most confused
    head.skops          the fitted head (classify.py; its format is features.heads.registry's)
    model.keras         the trained model (finetune.py)
    history.csv         epoch, phase, seconds, elapsed, loss, accuracy, val_loss, val_accuracy (finetune.py)
    curves.png, tensorboard/   the training curves (finetune.py)
    export/<format>[-<quantization>]/   what export.py wrote (features.serve.export's format)

A run folder is built under a hidden temporary name and renamed when everything in it is
written, so a folder under its final name is complete; its final name is claimed first
(an exclusive ``mkdir``), so runs started in the same second never collide. Rows are
appended whole under the table's lock: a write the disk cuts short is undone and the run
fails with the disk-full message, so a row is in the table entirely or not at all. A
table damaged by other means is read up to its damage, with a warning naming the line.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import validate
from ..data.photo_ids import first_bad_id
from ..errors import UsageError
from ..io import (
    DATA_LIMIT,
    TABLE_LIMIT,
    append_line,
    atomic_write,
    read_json,
    read_regular,
    read_text,
    remove_abandoned,
    temporary_name,
    write_json,
)

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
HISTORY_FIELDS = ("epoch", "phase", "seconds", "elapsed", "loss", "accuracy", "val_loss", "val_accuracy")
PROBABILITY_SPLITS = ("val", "test")


class RunFiles:
    """The files of one run folder (see the module docstring): their names, writers and readers."""

    CONFIG = "config.json"
    METRICS = "metrics.json"
    REPORT = "report.txt"
    PREDICTIONS = "predictions.csv"
    PROBABILITIES = "probabilities.npz"
    CONFUSION = "confusion.png"
    TOP_LOSSES = "top_losses.png"
    HEAD = "head.skops"
    MODEL = "model.keras"
    HISTORY = "history.csv"
    CURVES = "curves.png"
    TENSORBOARD = "tensorboard"
    EXPORTS = "export"

    def __init__(self, folder):
        self.folder = Path(folder)

    def __truediv__(self, name: str) -> Path:
        return self.folder / name

    @property
    def kind(self) -> str | None:
        """"head" (classify.py), "finetune" (finetune.py) or None (neither's model is here)."""
        if (self / self.MODEL).is_file():
            return "finetune"
        if (self / self.HEAD).is_file():
            return "head"
        return None

    def write_json(self, name: str, obj) -> None:
        write_json(self / name, obj)

    def _read_json(self, name: str) -> dict:
        try:
            obj = read_json(self / name)
        except (OSError, ValueError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict):
            raise UsageError(f"{self.folder}: {name} is missing, unreadable or not a record of a run")
        return obj

    def read_config(self) -> dict:
        """config.json, a JSON object.

        Raises:
            UsageError: missing, unreadable or not an object.
        """
        return self._read_json(self.CONFIG)

    def read_metrics(self) -> dict:
        """metrics.json, a JSON object whose figures are in range (an accuracy from 0 to 1, seconds from 0 to
        a year: :func:`features.records.metrics.in_range`).

        Raises:
            UsageError: missing, unreadable, not an object, or a figure out of range.
        """
        from .metrics import SUMMARY_KEYS, in_range

        row = self._read_json(self.METRICS)
        keys = [*SUMMARY_KEYS, "val_accuracy", "cv_accuracy", *(k for k in row if k.endswith("seconds"))]
        bad = [f"{k} {row[k]!r}" for k in keys if row.get(k) is not None and not in_range(row[k], k)]
        if bad:
            raise UsageError(f"{self.folder}: its {self.METRICS} holds {', '.join(bad)}, out of range: a damaged or "
                             "edited run folder; run the job again")
        return row

    def write_text(self, name: str, text: str) -> None:
        with atomic_write(self / name) as f:
            f.write(text)

    def write_probabilities(self, class_names, **splits) -> None:
        """Write ``split=(ids, labels, probabilities)`` for each split given ("val", "test")."""
        arrays = {"class_names": np.array(class_names, dtype=str)}
        for split, (ids, labels, proba) in splits.items():
            arrays[f"{split}_ids"] = np.array([str(i) for i in ids], dtype=str)
            arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
            arrays[f"{split}_proba"] = np.asarray(proba, dtype=np.float32)
        with atomic_write(self / self.PROBABILITIES, "wb") as f:
            np.savez_compressed(f, **arrays)

    def read_probabilities(self) -> tuple[list[str], dict]:
        """(class names, {split: (ids, labels, probabilities)}) of the validation and test images.

        Raises:
            UsageError: the file is missing or does not hold both splits.
        """
        try:
            with np.load(io.BytesIO(read_regular(self / self.PROBABILITIES, DATA_LIMIT)), allow_pickle=False) as f:
                names = [str(n) for n in f["class_names"]]
                splits = {s: (f[f"{s}_ids"].astype(str), f[f"{s}_labels"], f[f"{s}_proba"].astype(np.float64))
                          for s in PROBABILITY_SPLITS}
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            raise UsageError(f"{self.folder}: not a run folder with {self.PROBABILITIES} and {self.METRICS} "
                             f"({exc.__class__.__name__}); rerun classify.py or finetune.py to make one") from None
        problems = _probability_problems(names, splits)
        if problems:
            raise UsageError(f"{self / self.PROBABILITIES}: damaged or edited ({'; '.join(problems)}); rerun "
                             "classify.py or finetune.py to make it again")
        return names, splits

    def write_predictions(self, ids, y_true, *, proba, class_names) -> None:
        """Every scored test image with its true and predicted class and its probabilities."""
        with atomic_write(self / self.PREDICTIONS, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "true", "predicted", *[f"p_{c}" for c in class_names]])
            for i, y, p in zip(ids, y_true, np.asarray(proba)):
                writer.writerow([i, class_names[int(y)], class_names[int(np.argmax(p))], *[f"{v:.6f}" for v in p]])

    def _prediction_rows(self) -> list[dict]:
        text = read_text(self / self.PREDICTIONS, TABLE_LIMIT)
        return list(csv.DictReader(io.StringIO(text, newline="")))

    def test_ids(self) -> set[str]:
        """The ids of the test images the run was scored on.

        Raises:
            OSError, KeyError: no predictions.csv, or not one of this format.
        """
        return {row["id"] for row in self._prediction_rows()}

    def mistakes(self) -> set[str]:
        """The ids of the test images the run got wrong (see :meth:`test_ids`)."""
        return {row["id"] for row in self._prediction_rows() if row["true"] != row["predicted"]}

    def write_history(self, history: list[dict]) -> None:
        """The per-epoch history as CSV (:data:`HISTORY_FIELDS`)."""
        with atomic_write(self / self.HISTORY, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows({k: row.get(k) for k in HISTORY_FIELDS} for row in history)

    def validation_curve(self) -> list[tuple[float, float]]:
        """(cumulative training seconds, validation accuracy) of each epoch; [] where there is no history."""
        try:
            rows = csv.DictReader(io.StringIO(read_text(self / self.HISTORY, TABLE_LIMIT), newline=""))
            return [(float(h["elapsed"]), float(h["val_accuracy"])) for h in rows
                    if h.get("val_accuracy") not in (None, "")]
        except (OSError, ValueError, KeyError):
            return []


def _probability_problems(names: list[str], splits: dict) -> list[str]:
    """What is wrong with a probabilities file's arrays: shapes, labels, ids, values (empty: nothing)."""
    problems = []
    if len(names) < 2 or len(set(names)) != len(names) or not all(names):
        problems.append("its class names are not two or more different names")
    for split, (ids, labels, proba) in splits.items():
        n = len(ids)
        if ids.ndim != 1 or labels.ndim != 1 or proba.ndim != 2 or len(labels) != n or len(proba) != n \
                or proba.shape[1] != len(names):
            problems.append(f"{split}: {len(ids)} ids, {len(labels)} labels and probabilities of shape "
                            f"{proba.shape} for {len(names)} classes")
            continue
        if len(set(ids.tolist())) != n:
            problems.append(f"{split}: an image id appears more than once")
        if bad := first_bad_id(ids.tolist()):
            problems.append(f"{split}: the id {bad}")
        if n and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(names)):
            problems.append(f"{split}: labels outside 0..{len(names) - 1}")
        if not np.isfinite(proba).all():
            problems.append(f"{split}: NaN or infinite probabilities")
        elif n and (proba.min() < -1e-6 or proba.max() > 1 + 1e-6 or np.abs(proba.sum(axis=1) - 1).max() > 1e-3):
            problems.append(f"{split}: probabilities outside 0..1, or rows that do not sum to 1")
    return problems


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class RunFolder:
    """Where a run writes (``path``, temporary; ``files``, its :class:`RunFiles`) and where it ends up
    (``final``)."""

    def __init__(self, path: Path, final: Path):
        self.path, self.final = path, final
        self.files = RunFiles(path)


def _claim(out_dir: Path, stem: str) -> Path:
    """Create ``out_dir/stem`` (or ``stem-2``, ``stem-3``, ...) exclusively and return it."""
    n = 1
    while True:
        final = out_dir / (stem if n == 1 else f"{stem}-{n}")
        try:
            final.mkdir()
            return final
        except FileExistsError:
            n += 1


def _name_part(part: str) -> str:
    """A part of a run folder's name: a hub backbone as its cache names it (``hub-dinov2-<hash>``, not the
    preset's path and a colon), each of several joined by "+" alike; no "/"."""
    from ..models.hub import is_hub, slug

    return "+".join(slug(p) if is_hub(p) else p for p in part.split("+")).replace("/", "_")


@contextmanager
def run_folder(out_dir, *parts: str):
    """Yield a :class:`RunFolder`; on success ``path`` is renamed to ``final``,
    ``out_dir/<time>-<parts>``. On an error the temporary folder is removed.

    The final name is claimed at the start with an exclusive ``mkdir`` (an empty folder,
    replaced by the finished one), so two runs never pick the same name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out_dir)
    stem = "-".join([_now().strftime("%Y%m%d-%H%M%S"), *(_name_part(p) for p in parts if p)])
    final = _claim(out_dir, stem)
    tmp = temporary_name(out_dir / final.name, "partial")
    done = False
    try:
        tmp.mkdir()
        yield RunFolder(tmp, final)
        os.replace(tmp, final)  # over the empty claimed folder
        done = True
    finally:
        if not done:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                final.rmdir()  # the claim, still empty
            except OSError:
                pass


def append_result(out_dir, row: dict) -> Path:
    """Append one row (with the time) to the results table and return its path.

    The row is written whole or not at all: under the table's lock, a write cut short
    (a full disk) is truncated away again before the error is raised.

    Raises:
        DiskFullError: the disk is full; the table is as it was.
    """
    path = Path(out_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    append_line(path, json.dumps({"time": _now().isoformat(timespec="seconds"), **row}, sort_keys=True) + "\n",
                what="this run's row")
    return path


def read_results(out_dir) -> list[dict]:
    """Every row of the results table, oldest first (empty if there is none).

    A line that is not a whole JSON object (a table damaged by hand, or by a run from
    before rows were appended whole) is left out with a warning naming it. A row's run
    folder is found from any working folder: it sits beside the table (the same ``out_dir``
    made both), so a recorded relative path that does not resolve from here is read there.
    """
    out_dir = validate.path(out_dir, "results_dir", "the folder of the results table")
    path = Path(out_dir) / RESULTS_FILE
    if not path.exists():
        return []
    rows = []
    try:
        text = read_text(path, TABLE_LIMIT, errors="replace")
    except OSError as exc:
        raise UsageError(f"{path}: the results table cannot be read ({exc.strerror or exc}); move it away and run "
                         "the jobs again") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            log.warning("%s line %d is damaged (not one JSON row); it is left out", path, number)
            continue
        run_dir = row.get("run_dir")
        if isinstance(run_dir, str) and run_dir and not Path(run_dir).exists() \
                and (path.parent / Path(run_dir).name).is_dir():
            row["run_dir"] = str(path.parent / Path(run_dir).name)
        rows.append(row)
    return rows
