"""Heads trained by ``partial_fit`` a block of rows at a time (sgd), for caches larger than memory.

A head that streams by ``partial_fit`` (``HeadSpec.streams``, today ``sgd``) is fitted with ``partial_fit`` over
mixed blocks read from the cache (:class:`features.cache.CacheRows`): a step reads
``BLOCKS_PER_STEP`` blocks of ``BLOCK_ROWS`` consecutive rows at shuffled places (a cache's
rows are in listing order, often one class after another, so a step mixes several places of
the listing) and shuffles their rows. The scaler's statistics come from a first pass.
Peak memory is a step's rows and the model, whatever the number of rows.

The hyper-parameters (``alpha`` and the number of epochs) are chosen on the validation
split: every candidate trains side by side on the same steps, the validation log-loss of
each is measured after each epoch (smoother than the accuracy of a few hundred photos, which
picked early, unsettled epochs), and the search stops once no candidate has improved for
``PATIENCE`` epochs. The chosen head is then refitted on train + val, as every other head is.
The result is the same ``Pipeline(StandardScaler(), estimator)`` the other heads are, so it
is saved, loaded and used for prediction the same way.
"""

from __future__ import annotations

import time

import numpy as np

from ..data.splits import TRAIN, VAL
from ..errors import UsageError
from .blocks import blocks, class_weights, fit_scaler, in_order, predict_split
from .fitted import FittedHead, plain
from .params import check_epochs, check_params
from .registry import get_head_spec

BLOCKS_PER_STEP = 8
MAX_EPOCHS = 40
PATIENCE = 5


def steps(rows, codes, rng):
    """(X, y) of each step of one epoch over the rows whose split code is in ``codes``, shuffled."""
    wanted = np.isin(rows.splits, codes)
    chosen = [b for b in blocks(rows.n) if wanted[b[0]:b[1]].any()]
    order = rng.permutation(len(chosen))
    for s in range(0, len(order), BLOCKS_PER_STEP):
        xs, ys = [], []
        for start, stop in (chosen[i] for i in sorted(order[s:s + BLOCKS_PER_STEP])):
            keep = wanted[start:stop]
            xs.append(rows.read(start, stop)[keep])
            ys.append(rows.labels[start:stop][keep])
        X, y = np.concatenate(xs), np.concatenate(ys)
        mix = rng.permutation(len(y))
        yield X[mix], y[mix]


def _estimator(name: str, params: dict, class_weight: dict | None, seed: int):
    spec = get_head_spec(name)
    clf = spec.factory(dict(params), None, seed, True, None)
    if class_weight is not None:  # partial_fit takes class weights as a dict only
        clf.set_params(class_weight=class_weight)
    return clf


def fit_streaming_head(name: str, rows, *, fixed: dict | None = None, class_weight: str | None = None,
                       seed: int = 0, epochs: int | None = None) -> FittedHead:
    """Choose the hyper-parameters on the validation split, then refit on train + val.

    Args:
        rows: a :class:`features.cache.CacheRows`.
        fixed: grid keys the user gave (``alpha``): not searched.
        epochs: passes of the final fit; None chooses them on the validation split
            (up to ``MAX_EPOCHS``).

    Raises:
        UsageError: fewer than two classes in the training rows, or a search without a
            validation split.
    """
    spec = get_head_spec(name)
    fixed = check_params(fixed)
    check_epochs(epochs, spec)
    train_labels = rows.labels[rows.splits == TRAIN]
    if len(np.unique(train_labels)) < 2:
        raise UsageError("the training split holds fewer than two classes; nothing to classify")
    params = {k: v[0] for k, v in spec.grid.items()}
    params.update(fixed)
    grid = [k for k, v in spec.grid.items() if k not in fixed and len(v) > 1]
    has_val = bool((rows.splits == VAL).any())
    rng = np.random.default_rng(seed)
    val_accuracy, start = None, time.perf_counter()
    if grid or epochs is None:
        if not has_val:
            raise UsageError(f"{rows.path}: the cache has no validation rows to choose {name}'s settings on; "
                             "fix them (e.g. {alpha=0.0001} and {epochs=10}) or extract with a {split} that "
                             "has a validation fraction")
        params, chosen_epochs, val_accuracy, held_out = _search(name, rows, params, grid=grid,
                                                                class_weight=class_weight, seed=seed, rng=rng,
                                                                epochs=epochs)
        epochs = epochs or chosen_epochs
    elif has_val:  # nothing to choose: a copy trained on train alone scores val, as for every head
        held_out = _fit(name, params, rows, [TRAIN], class_weight=class_weight, seed=seed,
                        rng=np.random.default_rng(seed), epochs=epochs)
    else:
        held_out = None
    val = predict_split(held_out, rows, VAL) if held_out is not None else None
    search_seconds = time.perf_counter() - start
    start = time.perf_counter()
    pipeline = _fit(name, params, rows, [TRAIN, VAL], class_weight=class_weight, seed=seed, rng=rng, epochs=epochs)
    val = None if val is None else (val[2], val[1], val[0])  # (ids, labels, probabilities)
    return FittedHead(name=name, pipeline=pipeline, params=plain({**params, "epochs": int(epochs)}),
                            cv_accuracy=None, search_seconds=search_seconds, fit_seconds=time.perf_counter() - start,
                            val_accuracy=val_accuracy, val=val)


def _fit(name, params, rows, codes, *, class_weight, seed, rng, epochs: int):
    """``Pipeline(scaler, estimator)`` trained for ``epochs`` passes over the rows of ``codes``."""
    from sklearn.pipeline import Pipeline

    classes = np.arange(len(rows.class_names))

    scaler = fit_scaler(rows, codes)
    weights = class_weights(rows.labels[np.isin(rows.splits, codes)], len(classes), class_weight)
    clf = _estimator(name, params, weights, seed)
    for _ in range(epochs):
        for X, y in steps(rows, codes, rng):
            clf.partial_fit(scaler.transform(X), y, classes=classes)
    if weights is not None:
        clf.set_params(class_weight=class_weight)  # what was asked for, as the in-memory heads record it
    return Pipeline([("scale", scaler), ("clf", clf)])


def _search(name, rows, params, *, grid, class_weight, seed, rng, epochs):
    """Every candidate side by side, scored on val after each epoch (``epochs`` None: up to ``MAX_EPOCHS``, the
    best epoch chosen; given: that many, the last one kept).

    Returns:
        (params, epochs, val accuracy, the chosen candidate at its chosen epoch as a
        ``Pipeline``: trained on train alone, what scores the validation probabilities).
    """
    import copy
    import itertools

    from sklearn.pipeline import Pipeline

    spec, classes = get_head_spec(name), np.arange(len(rows.class_names))
    candidates = [{**params, **dict(zip(grid, values))} for values in itertools.product(*(spec.grid[k] for k in grid))]
    scaler = fit_scaler(rows, [TRAIN])
    weights = class_weights(rows.labels[rows.splits == TRAIN], len(classes), class_weight)
    models = [_estimator(name, p, weights, seed) for p in candidates]
    best, chosen = (np.inf, 0, 0, 0.0), None  # (log-loss, epoch, candidate, accuracy), a copy of that candidate
    for epoch in range(1, (epochs or MAX_EPOCHS) + 1):
        for X, y in steps(rows, [TRAIN], rng):
            X = scaler.transform(X)
            for model in models:
                model.partial_fit(X, y, classes=classes)
        correct, loss, total = np.zeros(len(models)), np.zeros(len(models)), 0
        for start, X, keep in in_order(rows, VAL):
            y = rows.labels[start:start + len(keep)][keep]
            X = scaler.transform(X)
            for m, model in enumerate(models):
                proba = model.predict_proba(X)
                correct[m] += (proba.argmax(1) == y).sum()
                loss[m] -= np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, None)).sum()
            total += len(y)
        loss, accuracy = loss / total, correct / total
        i = int(loss.argmin())
        if epochs is not None or loss[i] < best[0]:  # fixed epochs: the last epoch decides
            best, chosen = (float(loss[i]), epoch, i, float(accuracy[i])), copy.deepcopy(models[i])
        elif epoch - best[1] >= PATIENCE:
            break
    _, epoch, i, accuracy = best
    return candidates[i], epoch, accuracy, Pipeline([("scale", scaler), ("clf", chosen)])
