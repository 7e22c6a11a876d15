"""Learning curves: test accuracy against the number of training images per class.

What transfer learning buys when photos are few: a head on frozen embeddings is fitted on
seeded subsamples of the training split (K images per class, several seeds), from the one
feature cache, and scored on the whole test split. Only the K images per class are used:
the head's settings are chosen by cross-validation on them, and the validation split is
left out, as a user with K photos a class would have no more.
"""

from __future__ import annotations

import time

import numpy as np

from ..data.splits import subsample
from ..heads.search import fit_head
from ..records import metrics

DEFAULT_SIZES = (5, 10, 20, 50, 100, None)  # None: the whole training split


def frozen_curve(cache, sizes=DEFAULT_SIZES, *, seeds: int = 5, head: str = "logreg", n_jobs: int | None = 1) -> list:
    """Fit ``head`` on K training images per class for each K and seed; score on test.

    A size at or above the largest class's count is "all" and is fitted once per seed
    only where a subsample differs (so "all" appears once).

    Returns:
        One dict per (K, seed): per_class (K, or None for all), seed, n_train, accuracy,
        seconds (the fit, its settings' search included).
    """
    X_train, y_train = cache.split("train")
    X_test, y_test = cache.split("test")
    largest = int(np.bincount(y_train).max())
    rows = []
    for k in sizes:
        whole = k is None or k >= largest
        for seed in range(1 if whole else seeds):
            pick = np.arange(len(y_train)) if whole else subsample(y_train, k, seed)
            start = time.perf_counter()
            fitted = fit_head(head, X_train[pick], y_train[pick], cv=5, n_jobs=n_jobs, seed=seed)
            accuracy = metrics.accuracy(y_test, fitted.predict_proba(X_test))
            rows.append({"per_class": None if whole else int(k), "seed": seed, "n_train": int(len(pick)),
                         "accuracy": accuracy, "seconds": time.perf_counter() - start, "head": head})
        if whole:
            break
    return rows
