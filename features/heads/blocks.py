"""Reading a cache a block of rows at a time, for the heads that never hold the matrix in memory.

What the streamed heads share (:mod:`.streaming`'s SGD, :mod:`.lbfgs`'s logistic regression):
blocks of consecutive rows of some splits, the scaler fitted over them, class weights from the
labels held in memory, and probabilities of a split. A block is the most any read holds.
"""

from __future__ import annotations

import numpy as np

from ..cache.reader import CHECK_ROWS
from ..data.splits import TEST

BLOCK_ROWS = CHECK_ROWS  # a read of whole units: each compared with the digest taken when the cache was opened


def blocks(n: int, size: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of each block of ``size`` rows (default :data:`BLOCK_ROWS`) of ``n``."""
    size = size or BLOCK_ROWS
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def in_order(rows, codes, block_rows: int | None = None):
    """(start, X, keep) of each block of ``block_rows`` holding rows whose split code is in ``codes``, in row
    order."""
    wanted = np.isin(rows.splits, codes)
    for start, stop in blocks(rows.n, block_rows):
        keep = wanted[start:stop]
        if keep.any():
            yield start, rows.read(start, stop)[keep], keep


def fit_scaler(rows, codes):
    """A StandardScaler fitted on the rows of ``codes``, one block at a time."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    for _, X, _ in in_order(rows, codes):
        scaler.partial_fit(X)
    return scaler


def class_weights(labels: np.ndarray, n_classes: int, how: str | None) -> dict | None:
    """scikit-learn's "balanced" weights, from the labels held in memory."""
    if how is None:
        return None
    counts = np.bincount(labels, minlength=n_classes)
    return {c: float(len(labels) / (n_classes * counts[c])) for c in range(n_classes) if counts[c]}


def predict_split(fitted, rows, code: int = TEST):
    """(probabilities, labels, ids) of the rows of one split, a block at a time.

    Args:
        fitted: a :class:`~features.heads.registry.FittedHead`, or a fitted pipeline.
    """
    probas, labels, ids = [], [], []
    for start, X, keep in in_order(rows, code):
        probas.append(fitted.predict_proba(X))
        labels.append(rows.labels[start:start + len(keep)][keep])
        ids.append(rows.ids(start, start + len(keep))[keep])
    if not probas:
        return np.zeros((0, len(rows.class_names))), np.zeros(0, np.int64), np.zeros(0, str)
    return np.concatenate(probas), np.concatenate(labels), np.concatenate(ids)
