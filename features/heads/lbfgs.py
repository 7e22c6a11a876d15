"""Logistic regression fitted a block of rows at a time: the in-memory ``logreg``'s optimum, streamed.

scikit-learn's ``LogisticRegression`` (L2, the lbfgs solver) minimises, for C and rows x_i
with labels y_i and weights s_i (its class weights),

    f(W, b) = (1 / S) sum_i s_i loss(W x_i + b, y_i) + ||W||^2 / (2 C S),    S = sum_i s_i,

with loss the multinomial cross-entropy (softmax) for three classes or more, and the
binomial one (one row of W) for two. The objective is convex and smooth: full-batch
L-BFGS whose loss and gradient are one pass over the cache's blocks reaches the same
optimum, without ever holding the matrix (Spark MLlib fits its logistic regression the same
way). This module computes exactly that objective, a block of :data:`PASS_ROWS` rows at a
time, and hands it to ``scipy.optimize.minimize(method="L-BFGS-B")`` with scikit-learn's own
settings (tolerance, line search, iteration cap), from scikit-learn's starting point (zeros).

The result is a real ``LogisticRegression`` (its fitted attributes set) behind the same
scaler, so it is saved, loaded, folded into an export and used for prediction exactly as
the in-memory head is. C is chosen on the validation split along a warm-started path,
strongest regularisation first (each fit starts from the previous one's optimum); the
chosen head is refitted on train + val, as every head is.
"""

from __future__ import annotations

import time

import numpy as np

from ..data.splits import TRAIN, VAL
from ..errors import UsageError
from .blocks import class_weights, fit_scaler, in_order, predict_split
from .fitted import FittedHead, plain
from .params import check_params
from .registry import get_head_spec

PASS_ROWS = 8192  # rows a pass reads at once: 40 MB of 1,280 float32, far from the memory limit
TOL = 1e-4  # scikit-learn's LogisticRegression default
MAX_ITER = 2000  # the in-memory head's (features.heads.registry, logreg)


class Objective:
    """f and its gradient, one pass over the rows of ``codes`` each call; the passes are counted.

    Args:
        rows: a :class:`features.cache.CacheRows`.
        scaler: the fitted StandardScaler the head puts first.
    """

    def __init__(self, rows, codes, *, scaler, n_classes: int, C: float, class_weight: str | None):
        self.rows, self.codes, self.C, self.passes = rows, list(codes), float(C), 0
        self.mean = np.asarray(scaler.mean_, np.float64)
        self.scale = np.asarray(scaler.scale_, np.float64)
        self.binary = n_classes == 2
        self.outputs = 1 if self.binary else n_classes
        self.dim = len(self.mean)
        labels = rows.labels[np.isin(rows.splits, self.codes)]
        weights = class_weights(labels, n_classes, class_weight)
        self.class_weight = np.array([(weights or {}).get(c, 1.0) for c in range(n_classes)], np.float64)
        self.total = float(self.class_weight[labels].sum())

    def __call__(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        W = w[: self.outputs * self.dim].reshape(self.outputs, self.dim)
        b = w[self.outputs * self.dim:]
        loss, gW, gb = 0.0, np.zeros_like(W), np.zeros_like(b)
        for start, X, keep in in_order(self.rows, self.codes, PASS_ROWS):
            y = self.rows.labels[start:start + len(keep)][keep]
            X = (X.astype(np.float64) - self.mean) / self.scale
            s = self.class_weight[y]
            z = X @ W.T + b
            if self.binary:  # log(1 + e^z) - y z, scikit-learn's HalfBinomialLoss
                z = z[:, 0]
                loss += float(s @ (np.logaddexp(0, z) - y * z))
                g = (1 / (1 + np.exp(-z)) - y) * s
                gW[0] += g @ X
                gb[0] += g.sum()
            else:  # log sum_k e^z_k - z_y, scikit-learn's HalfMultinomialLoss
                top = z.max(axis=1, keepdims=True)
                e = np.exp(z - top)
                total = e.sum(axis=1, keepdims=True)
                loss += float(s @ (np.log(total[:, 0]) + top[:, 0] - z[np.arange(len(y)), y]))
                g = e / total
                g[np.arange(len(y)), y] -= 1
                g *= s[:, None]
                gW += g.T @ X
                gb += g.sum(axis=0)
        self.passes += 1
        l2 = 1.0 / (self.C * self.total)
        f = loss / self.total + 0.5 * l2 * float(np.sum(W * W))
        grad = np.concatenate([(gW / self.total + l2 * W).ravel(), gb / self.total])
        return f, grad

    def minimise(self, w0: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """(the optimum, L-BFGS iterations), from ``w0`` (zeros: scikit-learn's start)."""
        from scipy.optimize import minimize

        w0 = np.zeros(self.outputs * (self.dim + 1)) if w0 is None else w0
        result = minimize(self, w0, method="L-BFGS-B", jac=True,
                          options={"maxiter": MAX_ITER, "maxls": 50, "gtol": TOL,
                                   "ftol": 64 * np.finfo(float).eps})
        return result.x, int(result.nit)

    def estimator(self, w: np.ndarray, class_weight: str | None):
        """A fitted ``LogisticRegression`` holding ``w``, as scikit-learn would have left it."""
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=self.C, max_iter=MAX_ITER, class_weight=class_weight)
        clf.coef_ = w[: self.outputs * self.dim].reshape(self.outputs, self.dim).copy()
        clf.intercept_ = w[self.outputs * self.dim:].copy()
        clf.classes_ = np.arange(len(self.class_weight))
        clf.n_features_in_ = self.dim
        clf.n_iter_ = np.array([0], np.int32)
        return clf


def fit_lbfgs_head(name: str, rows, *, fixed: dict | None = None, class_weight: str | None = None,
                   seed: int = 0, epochs: int | None = None) -> FittedHead:
    """Choose C on the validation split (a warm-started path), then refit on train + val; a block at a time.

    Args:
        rows: a :class:`features.cache.CacheRows`.
        fixed: ``C`` when the user gave it (then nothing is searched).
        epochs: refused: L-BFGS runs until the optimum, not for a number of passes.

    Raises:
        UsageError: fewer than two classes in the training rows, epochs given, or a search
            without a validation split.
    """
    from sklearn.pipeline import Pipeline

    spec = get_head_spec(name)
    fixed = check_params(fixed)
    if epochs is not None:
        raise UsageError(f"{{epochs}} {epochs}: head {name} runs until its optimum, in as many passes as it takes; "
                         "leave {epochs} out")
    train_labels = rows.labels[rows.splits == TRAIN]
    if len(np.unique(train_labels)) < 2:
        raise UsageError("the training split holds fewer than two classes; nothing to classify")
    n_classes = len(rows.class_names)
    has_val = bool((rows.splits == VAL).any())
    path = [fixed["C"]] if "C" in fixed else sorted(spec.grid["C"])  # strongest regularisation first
    if len(path) > 1 and not has_val:
        raise UsageError(f"{rows.path}: the cache has no validation rows to choose {name}'s C on; fix it (e.g. "
                         "{C=0.01}) or extract with a {split} that has a validation fraction")
    start = time.perf_counter()
    scaler = fit_scaler(rows, [TRAIN])
    best, w, passes, val = None, None, 0, None
    for C in path:
        objective = Objective(rows, [TRAIN], scaler=scaler, n_classes=n_classes, C=C, class_weight=class_weight)
        w, _ = objective.minimise(w)  # from the previous C's optimum
        passes += objective.passes
        if not has_val:
            break
        pipeline = Pipeline([("scale", scaler), ("clf", objective.estimator(w, class_weight))])
        proba, labels, ids = predict_split(pipeline, rows, VAL)
        accuracy = float(np.mean(proba.argmax(axis=1) == labels))
        if best is None or accuracy > best[0]:  # ties keep the stronger regularisation
            best, val = (accuracy, C, w), (ids, labels, proba)
    C, w0 = (best[1], best[2]) if best else (path[0], w)
    search_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scaler = fit_scaler(rows, [TRAIN, VAL])
    objective = Objective(rows, [TRAIN, VAL], scaler=scaler, n_classes=n_classes, C=C, class_weight=class_weight)
    w, iterations = objective.minimise(w0)  # from the train rows' optimum: the same optimum, fewer passes
    passes += objective.passes
    clf = objective.estimator(w, class_weight)
    clf.n_iter_ = np.array([iterations], np.int32)
    return FittedHead(name=name, pipeline=Pipeline([("scale", scaler), ("clf", clf)]),
                            params=plain({"C": C}), cv_accuracy=None,
                            search_seconds=search_seconds, fit_seconds=time.perf_counter() - start,
                            val_accuracy=best[0] if best else None,
                            val=val, passes=passes)
