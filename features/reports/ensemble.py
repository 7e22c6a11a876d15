"""Ensembles of run folders: their class probabilities averaged, scored as one more method.

Every run folder of classify.py and finetune.py holds ``probabilities.npz``: the image ids,
labels and class probabilities of its validation and test images. An ensemble averages the
members' probabilities image by image (matched by id), so no image is decoded again;
members are chosen on the validation split (:func:`select`), and the test split is scored
once, for the chosen set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache.reader import align_ids
from ..errors import UsageError
from ..outputs import check_output_folder
from ..records import metrics, runs
from ..records.runs import RunFiles
from ..records.scored import Scored, write_scored

METHOD = "ensemble"


@dataclass(kw_only=True)
class Member:
    """One run folder's record and probabilities."""

    run_dir: Path
    row: dict
    class_names: list[str]
    splits: dict  # split -> (ids, labels, probabilities)

    @property
    def label(self) -> str:
        r = self.row
        what = r.get("head") if r.get("method") == "frozen-features" else r.get("method")
        flip = " flip" if r.get("tta") == "flip" else ""
        return f"{r.get('backbone')}{flip} {what}"


def load_member(run_dir) -> Member:
    """A run folder's metrics.json and probabilities.npz.

    Raises:
        UsageError: a folder without them (made before ensembles existed, or not a run).
    """
    files = RunFiles(run_dir)
    names, splits = files.read_probabilities()
    row = files.read_metrics()
    row.pop("metrics", None)
    row.pop("config", None)
    return Member(run_dir=Path(run_dir), row=row, class_names=names, splits=splits)


def aligned(members: list[Member], split: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(ids, labels, each member's probabilities) on the images every member scored, in one order.

    Raises:
        UsageError: members of other classes or datasets, or labels that disagree.
    """
    first = members[0]
    for m in members[1:]:
        if m.class_names != first.class_names or m.row.get("dataset") != first.row.get("dataset"):
            raise UsageError(f"{m.run_dir} is a run on {m.row.get('dataset')} {m.class_names}, "
                             f"{first.run_dir} on {first.row.get('dataset')} {first.class_names}: an ensemble "
                             "needs runs on the same dataset and classes")
    common = set(first.splits[split][0])
    for m in members[1:]:
        common &= set(m.splits[split][0])
    ids = np.array(sorted(common), dtype=str)
    if not len(ids):
        raise UsageError(f"the runs share no {split} images: were they made with the same split and seed?")
    labels, probas = None, []
    for m in members:
        m_ids, m_labels, m_proba = m.splits[split]
        try:
            order = align_ids(ids, m_ids, exact=False)
        except ValueError as exc:
            raise UsageError(f"{m.run_dir}: its {split} images cannot be matched by id ({exc})") from None
        order = np.arange(len(ids)) if order is None else order
        if labels is not None and not np.array_equal(labels, m_labels[order]):
            raise UsageError(f"{m.run_dir} labels the {split} images otherwise than {first.run_dir}")
        labels = m_labels[order]
        probas.append(m_proba[order])
    return ids, labels, probas


SELECTIONS = ("all", "val", "weighted")
WEIGHTED_ROUNDS = 25  # Caruana et al. add members for a fixed number of rounds, then keep the best prefix


def _fitness(labels: np.ndarray, probas: list[np.ndarray]):
    """How good the average of ``probas`` is on validation: (accuracy, minus the log loss), larger better."""

    def key(chosen):
        p = np.mean([probas[i] for i in chosen], axis=0)
        return metrics.accuracy(labels, p), -metrics.log_loss(labels, p)

    return key


def select(members: list[Member], max_members: int | None = None, *, replacement: bool = False) -> list[int]:
    """Greedy forward selection on the validation split (Caruana et al., ICML 2004).

    Start from the member of best validation accuracy (ties: lower validation log loss). Without
    ``replacement``: add the member whose addition improves the average most (validation accuracy, ties:
    lower log loss), while one does. With it: any member, one already chosen included, may be added again (a
    member chosen twice weighs twice), for ``max_members`` rounds (default 25) whether or not a round improves;
    the best prefix is kept (the shortest among equals). Returns the chosen members' positions in the order
    chosen, repeats included.
    """
    _, labels, probas = aligned(members, "val")
    return _select(labels, probas, max_members, replacement=replacement)


def _select(labels: np.ndarray, probas: list[np.ndarray], max_members: int | None, *, replacement: bool) -> list[int]:
    key = _fitness(labels, probas)
    n = len(probas)
    chosen = [max(range(n), key=lambda i: key([i]))]
    if replacement:
        prefixes = [list(chosen)]
        for _ in range((max_members or WEIGHTED_ROUNDS) - 1):
            chosen.append(max(range(n), key=lambda i: key(chosen + [i])))
            prefixes.append(list(chosen))
        return max(prefixes, key=lambda p: (key(p), -len(p)))
    while len(chosen) < (max_members or n):
        rest = [i for i in range(n) if i not in chosen]
        if not rest:
            break
        best = max(rest, key=lambda i: key(chosen + [i]))
        if key(chosen + [best]) <= key(chosen):
            break
        chosen.append(best)
    return chosen


def heldout_scores(members: list[Member], max_members: int | None = None, *, replacement: bool = False,
                   folds: int = 2, seed: int = 0) -> tuple[float, float]:
    """(accuracy, log loss) of the selection itself on validation, each validation image scored by members
    chosen without it: the images split into ``folds`` stratified folds, the members chosen (:func:`select`'s
    rule) on the other folds, the fold scored on their average. The figures of the set chosen on all of them
    are optimistic (it was chosen on those very images); these are not, so they can be compared with a single
    run's validation figures."""
    from sklearn.model_selection import KFold, StratifiedKFold

    _, labels, probas = aligned(members, "val")
    least = np.bincount(labels).min(initial=0) if len(labels) else 0
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed) if least >= folds else \
        KFold(min(folds, len(labels)), shuffle=True, random_state=seed)
    average = np.zeros_like(probas[0])
    for fit, held in splitter.split(np.zeros(len(labels)), labels):
        chosen = _select(labels[fit], [p[fit] for p in probas], max_members, replacement=replacement)
        average[held] = np.mean([probas[i][held] for i in chosen], axis=0)
    return metrics.accuracy(labels, average), metrics.log_loss(labels, average)


def _photo_root(run_dir) -> str | None:
    """The folder a member's photo ids are relative to (the ensemble's top losses draw them), or None."""
    from ..serve.explain import photo_root

    try:
        return photo_root(run_dir)
    except UsageError:  # a member without a config (an ensemble itself): its photos are not known
        return None


def score_ensemble(run_dirs, selection: str = "all", *, max_members: int | None = None, out_dir="runs") -> dict:
    """Average the runs' probabilities, score the test split once, record a results row.

    Args:
        selection: "all" (every run given), "val" (greedy selection on the validation split) or "weighted"
            (the same with replacement: a run chosen k times weighs k; :func:`select`).

    Returns:
        The results row plus "metrics" and "members" (each with its own val and test accuracy).
    """
    from .. import validate

    run_dirs = validate.paths(run_dirs, "run_dirs", "run folders")
    if selection not in SELECTIONS:
        raise UsageError(f"{{select}} {selection}: choose all, val or weighted")
    unique: dict[Path, str] = {}
    for d in run_dirs:  # "R" and "R/" (or a link to R) are one run
        unique.setdefault(Path(d).resolve(), str(d))
    members = [load_member(d) for d in unique.values()]
    if len(members) < 2:
        raise UsageError("an ensemble needs at least two different run folders")
    chosen = list(range(len(members))) if selection == "all" else \
        select(members, max_members, replacement=selection == "weighted")
    picked = [members[i] for i in chosen]  # a member chosen k times (selection "weighted") weighs k
    counts = {i: chosen.count(i) for i in dict.fromkeys(chosen)}
    distinct = [members[i] for i in counts]
    val_ids, val_labels, val_probas = aligned(picked, "val")
    ids, labels, probas = aligned(picked, "test")
    proba = np.mean(probas, axis=0)
    names = picked[0].class_names
    scores = metrics.score(labels, proba, names)
    report = []
    for m in members:
        _, y, (p,) = aligned([m], "test")
        _, vy, (vp,) = aligned([m], "val")
        report.append({"run_dir": str(m.run_dir), "label": m.label, "chosen": m in picked,
                       "val_accuracy": metrics.accuracy(vy, vp), "test_accuracy": metrics.accuracy(y, p)})
    heldout = {}
    if selection != "all" and len(val_labels) >= 2:
        accuracy, loss = heldout_scores(members, max_members, replacement=selection == "weighted")
        heldout = {"val_accuracy_heldout": accuracy, "val_log_loss_heldout": loss}
    first = picked[0].row
    seconds = sum(float(m.row.get("total_seconds") or 0.0) for m in distinct)
    check_output_folder(out_dir)
    with runs.run_folder(out_dir, str(first.get("dataset")), "+".join(dict.fromkeys(
            str(m.row.get("backbone")) for m in picked)), METHOD) as run:
        row = {
            "dataset": first.get("dataset"),
            "backbone": "+".join(dict.fromkeys(str(m.row.get("backbone")) for m in picked)),
            "image_size": first.get("image_size"), "method": METHOD,
            "head": " + ".join(members[i].label + (f" x{n}" if n > 1 else "") for i, n in counts.items()),
            **{k: scores[k] for k in metrics.SUMMARY_KEYS}, "per_class": scores["per_class"],
            "val_accuracy": metrics.accuracy(val_labels, np.mean(val_probas, axis=0)),
            # the selection's own validation figures, each image scored by a set chosen without it
            **heldout,
            "selection": selection, "members": [str(m.run_dir) for m in picked],  # repeats: the weights
            "train_seconds": seconds, "total_seconds": seconds, "n_test": int(len(ids)),
            "run_dir": str(run.final),
        }
        write_scored(run.files, Scored(
            class_names=names, test=(ids, labels, proba), val=(val_ids, val_labels, np.mean(val_probas, axis=0)),
            scores=scores, title=f"ensemble of {len(distinct)}: accuracy {scores['accuracy']:.4f}",
            photo_root=_photo_root(picked[0].run_dir),
            record={**row, "metrics": scores, "members_report": report}))
    runs.append_result(out_dir, row)
    return {**row, "metrics": scores, "members_report": report}
