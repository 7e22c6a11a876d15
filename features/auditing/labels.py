"""Likely label errors: cleanlab's ``find_label_issues`` on out-of-fold class probabilities.

The probabilities are the logistic-regression head's (the toolkit's default head, its ``C`` chosen
by the same cross-validated search ``classify.py`` runs), predicted for each row by a copy fitted on
the other folds: no row is scored by a head that was trained on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

FOLDS = 5
REVIEW = 50  # rows of lowest label quality kept for review, flagged or not


@dataclass(kw_only=True, frozen=True)
class LabelIssue:
    row: int
    given: int
    suggested: int
    score: float  # 1 - cleanlab's label quality (self-confidence): 1 is surely wrong, 0 surely right


def check_rows(labels: np.ndarray, n_classes: int, folds: int = FOLDS) -> None:
    """Refuse a cache whose classes cannot be cross-validated.

    Raises:
        UsageError: one class, or a class with fewer rows than folds.
    """
    counts = np.bincount(np.asarray(labels), minlength=n_classes)
    present = counts[counts > 0]
    if len(present) < 2:
        raise UsageError("the cache holds one class; a label can only be wrong among two or more")
    if present.min() < folds:
        raise UsageError(f"a class has {present.min()} photos; the out-of-fold probabilities need at least "
                         f"{folds} of each class ({folds}-fold cross-validation)")


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, *, C: float, folds: int = FOLDS,
                              seed: int = 0, n_jobs: int | None = None) -> np.ndarray:
    """Each row's class probabilities from a logistic regression fitted on the other folds (rows x classes)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from ..heads.registry import make_head

    head = make_head("logreg", {"C": C}, seed=seed)
    return cross_val_predict(head, embeddings, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                             method="predict_proba", n_jobs=n_jobs)


def find_issues(labels: np.ndarray, probabilities: np.ndarray) -> tuple[list[LabelIssue], list[LabelIssue]]:
    """(the rows cleanlab finds likely mislabelled, every row), each most suspicious first.

    cleanlab flags from its estimate of how many labels are wrong (the confident joint); on a set the
    head separates almost perfectly it may flag none, so the ranking of every row is kept for review.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels)
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    flagged = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    suggested = probabilities.argmax(1)

    def issue(r):
        return LabelIssue(row=int(r), given=int(labels[r]), suggested=int(suggested[r]), score=float(1 - quality[r]))

    return [issue(r) for r in flagged], [issue(r) for r in np.argsort(quality, kind="stable")]
