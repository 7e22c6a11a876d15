"""One writer for a scored run: what every run scored on the test split writes beside its own model.

A head (classify.py), a fine-tune (finetune.py), an ensemble and any new kind of run hand a :class:`Scored` to
:func:`write_scored`; the files are :class:`~features.records.runs.RunFiles`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import metrics
from .plots import plot_confusion
from .runs import RunFiles
from .sheets import top_losses


@dataclass(kw_only=True)
class Scored:
    """What every scored run (a head, a fine-tune, an ensemble, ...) writes beside its own model: the test split
    scored once, and the validation split where the run has one.

    Attributes:
        test: (ids, labels, probabilities) of the test photos; ``val`` the same of the validation ones, or None.
        scores: :func:`features.records.metrics.score` of the test split.
        title: the confusion matrix's title.
        photo_root: the folder the ids are relative to (the top-losses sheet draws the photos); None where the
            photos are no folder at hand (a TFDS set).
        record: metrics.json: the results-table row and whatever else the run says of itself.
        config: config.json (the resolved settings), or None where the run has none.
    """

    class_names: list
    test: tuple
    val: tuple | None = None
    scores: dict
    title: str
    photo_root: str | None = None
    record: dict
    config: dict | None = None


def write_scored(files: RunFiles, scored: Scored) -> None:
    """probabilities.npz (what ensembles average), predictions.csv, report.txt, confusion.png, top_losses.png,
    config.json (where the run has one) and metrics.json, into the run folder ``files``."""
    names, (ids, labels, proba) = scored.class_names, scored.test
    files.write_probabilities(names, test=scored.test, **({"val": scored.val} if scored.val is not None else {}))
    files.write_text(RunFiles.REPORT, metrics.report_text(labels, proba, names))
    files.write_predictions(ids, labels, proba=proba, class_names=names)
    plot_confusion(scored.scores["confusion_matrix"], names, path=files / RunFiles.CONFUSION, title=scored.title)
    top_losses(ids, labels, proba=proba, class_names=names, photo_root=scored.photo_root,
               path=files / RunFiles.TOP_LOSSES)
    if scored.config is not None:
        files.write_json(RunFiles.CONFIG, scored.config)
    files.write_json(RunFiles.METRICS, scored.record)
