"""Choosing a head's settings and fitting it. :func:`fit_head`: stratified cross-validation on the training
split, then the chosen head refitted on train + val (the in-memory heads); :func:`fit_streamed`: the same a block
of rows at a time, by the head's own way of streaming (:mod:`.streaming` or :mod:`.lbfgs`)."""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import UsageError
from .fitted import FittedHead, plain
from .params import calibration_folds, check_params, check_search
from .registry import HEADS, get_head_spec, make_head


def fit_head(name: str, X_train, y_train, X_val=None, y_val=None, *, fixed: dict | None = None,
             class_weight: str | None = None, cv: int = 5, n_jobs: int | None = None,
             seed: int = 0) -> FittedHead:
    """Choose the hyper-parameters by CV on train, then refit on train + val.

    Args:
        fixed: grid keys whose value the user gave (``--C``): they are not searched.
        cv: folds of the stratified search (reduced where a class has fewer rows).

    Raises:
        UsageError: fewer than two classes in the training rows.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    spec = get_head_spec(name)
    fixed = check_params(fixed)
    check_search(cv, n_jobs, seed)
    if n_jobs is not None and n_jobs > (os.cpu_count() or 1):  # more workers than cores only costs memory
        n_jobs = os.cpu_count() or 1
    if len(np.unique(y_train)) < 2:
        raise UsageError("the training split holds fewer than two classes; nothing to classify")
    calibration = calibration_folds(name, y_train)  # the train rows alone: the held-out copy fits on them
    n_fit = len(y_train) + (len(y_val) if y_val is not None else 0)
    if fixed.get("k", 0) > n_fit:
        raise UsageError(f"{{k}} {fixed['k']}: the training and validation splits hold only {n_fit} images; "
                         f"give at most {n_fit} neighbours")
    grid = {k: v for k, v in spec.grid.items() if k not in fixed and len(v) > 1}
    folds = min(cv, int(np.bincount(y_train)[np.unique(y_train)].min()))
    if spec.max_grid is not None:
        grid = spec.max_grid(grid, len(y_train) * (folds - 1) // max(folds, 2))
    params = {k: v[0] for k, v in spec.grid.items() if len(v) == 1}
    params.update(fixed)
    cv_accuracy = None
    start = time.perf_counter()
    if grid and folds >= 2:
        search = GridSearchCV(
            make_head(name, params, class_weight=class_weight, seed=seed, probability=False),
            {f"clf__{spec.search_keys[k]}": v for k, v in grid.items()}, scoring="accuracy",
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=n_jobs, refit=False)
        search.fit(X_train, y_train)
        params.update({k: search.best_params_[f"clf__{spec.search_keys[k]}"] for k in grid})
        cv_accuracy = float(search.best_score_)
    search_seconds = time.perf_counter() - start
    X_fit, y_fit = X_train, y_train
    if X_val is not None and len(X_val):
        X_fit, y_fit = np.vstack([X_train, X_val]), np.concatenate([y_train, y_val])
    pipeline = make_head(name, params, class_weight=class_weight, seed=seed, probability=True, n_jobs=n_jobs,
                         calibration=calibration)
    start = time.perf_counter()
    pipeline.fit(X_fit, y_fit)
    return FittedHead(name=name, pipeline=pipeline, params=plain(params), cv_accuracy=cv_accuracy,
                      search_seconds=search_seconds,
                      fit_seconds=time.perf_counter() - start, calibration=calibration)


def fit_streamed(name: str, rows, *, fixed: dict | None = None, class_weight: str | None = None, seed: int = 0,
                 epochs: int | None = None) -> FittedHead:
    """Fit a head a block of rows at a time, the way its registry entry streams (``HeadSpec.streams``):
    "partial_fit" (sgd, :func:`.streaming.fit_streaming_head`) or "lbfgs" (logreg, :mod:`.lbfgs`).

    Raises:
        UsageError: a head that cannot stream (naming those that can).
    """
    spec = get_head_spec(name)
    if spec.streams == "lbfgs":
        from .lbfgs import fit_lbfgs_head

        return fit_lbfgs_head(name, rows, fixed=fixed, class_weight=class_weight, seed=seed, epochs=epochs)
    if spec.streams != "partial_fit":
        can = ", ".join(n for n, s in HEADS.items() if s.streams)
        raise UsageError(f"{{head}} {name} holds the embeddings in memory and cannot stream; heads that stream: {can}")
    from .streaming import fit_streaming_head

    return fit_streaming_head(name, rows, fixed=fixed, class_weight=class_weight, seed=seed, epochs=epochs)
