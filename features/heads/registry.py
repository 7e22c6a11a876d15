"""The head registry: scikit-learn heads for cached embeddings (the frozen-base baseline), and head files.

One :class:`HeadSpec` per head, made by decorating its factory with :func:`register_head`
(timm's ``@register_model``): its grid, whether it is linear and how it folds into one
linear map (the export), whether it streams. Every head is a
``Pipeline(StandardScaler(), estimator)``, so scaling is learnt from the rows it is fitted on
and nothing of the test split can leak into it. Hyper-parameters are chosen by stratified
cross-validation on the training split only (:mod:`.search`); the chosen head is then
refitted on train + val. Every head gives probabilities (LinearSVC is calibrated, the RBF
SVM uses Platt scaling), so log-loss and ROC AUC can be reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import validate
from ..errors import UsageError


@dataclass(frozen=True)
class HeadSpec:
    """One registry entry: everything about a head, in one place.

    Attributes:
        name: the registry name (``classify.py --model``).
        description: one line for the help and the docs.
        factory: ``factory(params, class_weight, seed, probability, n_jobs)`` returns the
            unfitted estimator; ``params`` holds the grid's keys. ``probability`` False asks
            for the cheaper estimator searched by cross-validation (no calibration).
        grid: parameter -> candidate values searched when the caller does not fix it.
        search_keys: parameter -> the estimator's own parameter, for the search.
        linear: the fitted head is a linear function of the scaled embeddings followed by
            a softmax or sigmoid (so it folds into one Dense layer, see the export).
        max_grid: optional ``max_grid(grid, rows_per_fold)``, trimming candidates that
            cannot apply to so few rows.
        streaming: the estimator learns with ``partial_fit``: it is trained a block of rows
            at a time (:mod:`features.heads.streaming`) and never holds the matrix in memory.
        fold: optional ``fold(fitted estimator)`` giving its probabilities as
            :class:`Linear` members (linear heads only): what lets the export fold the head
            into one graph with its backbone.
        calibration_folds: the folds of cross-validation that calibrate its probabilities
            (the SVMs), at most; every class needs at least two rows for it.
        streams: how it fits a block of rows at a time, where it can: "partial_fit"
            (:func:`features.heads.streaming.fit_streaming_head`; such a head always streams) or
            "lbfgs" (:mod:`features.heads.lbfgs`: the in-memory head's own optimum, streamed when
            asked or when the matrix would not fit in memory).
    """

    name: str
    description: str
    factory: Callable
    grid: dict
    search_keys: dict
    linear: bool
    max_grid: Callable | None = None
    streaming: bool = False
    fold: Callable | None = None
    calibration_folds: int | None = None
    streams: str | None = None


@dataclass
class Linear:
    """A linear head's probabilities: ``members`` linear maps, their outputs averaged.

    Each member ``m`` computes ``z = x @ kernel[m] + bias[m]`` on the scaled embeddings, then
    "softmax" (``softmax(z)``) or "sigmoid" (``sigmoid(z)`` normalised to sum one; with one
    column, ``[1 - sigmoid(z), sigmoid(z)]``). The calibrated linear SVM has one member per
    calibration fold; the others have one.
    """

    kernel: np.ndarray  # (members, features, outputs)
    bias: np.ndarray  # (members, outputs)
    activation: str

    def fold_scaler(self, mean: np.ndarray, scale: np.ndarray) -> "Linear":
        """The same map on unscaled embeddings: ``(x - mean) / scale`` folded into the weights."""
        kernel = self.kernel / scale[None, :, None]
        bias = self.bias - np.einsum("d,mdk->mk", mean, kernel)
        return Linear(kernel, bias, self.activation)

    def predict_proba(self, X) -> np.ndarray:
        """The probabilities, in numpy (float64): the reference the exported graph is held to."""
        z = np.einsum("nd,mdk->mnk", np.asarray(X, np.float64), self.kernel) + self.bias[:, None, :]
        if self.activation == "softmax":
            e = np.exp(z - z.max(axis=-1, keepdims=True))
            p = e / e.sum(axis=-1, keepdims=True)
        else:
            s = 1.0 / (1.0 + np.exp(-z))
            p = np.concatenate([1 - s, s], axis=-1) if s.shape[-1] == 1 else s / s.sum(axis=-1, keepdims=True)
        return p.mean(axis=0)


def _one(coef, intercept, activation) -> Linear:
    return Linear(np.asarray(coef, np.float64).T[None], np.asarray(intercept, np.float64)[None], activation)


def _fold_logreg(clf) -> Linear:
    return _one(clf.coef_, clf.intercept_, "softmax" if clf.coef_.shape[0] > 1 else "sigmoid")


def _fold_sgd(clf) -> Linear:  # one-vs-rest logistic models, normalised (scikit-learn's _predict_proba_lr)
    return _one(clf.coef_, clf.intercept_, "sigmoid")


def _fold_calibrated_linear_svm(clf) -> Linear:
    """Each calibration member: p_k = sigmoid(-(a_k f_k + b_k)) of the SVM's decision f_k."""
    kernels, biases = [], []
    for member in clf.calibrated_classifiers_:
        svm = member.estimator
        a = np.array([c.a_ for c in member.calibrators], np.float64)
        b = np.array([c.b_ for c in member.calibrators], np.float64)
        kernels.append(-(svm.coef_.T * a))
        biases.append(-(svm.intercept_ * a + b))
    return Linear(np.stack(kernels), np.stack(biases), "sigmoid")


def fold_head(pipeline, name: str) -> Linear:
    """A fitted head pipeline as one :class:`Linear` map on the raw embeddings.

    Raises:
        UsageError: the head has no single linear form (naming the heads that do).
    """
    spec = get_head_spec(name)
    if spec.fold is None:
        foldable = ", ".join(n for n, s in HEADS.items() if s.fold is not None)
        raise UsageError(f"head {name} has no single-graph form to export; heads that export: {foldable}")
    scaler = pipeline.named_steps["scale"]
    return spec.fold(pipeline.named_steps["clf"]).fold_scaler(np.asarray(scaler.mean_, np.float64),
                                                                np.asarray(scaler.scale_, np.float64))


HEADS: dict[str, HeadSpec] = {}
CALIBRATION = "_calibration_folds"  # the factory's key for the calibration folds (not a recorded setting)


def register_head(name: str, description: str, grid: dict, linear: bool, search_keys: dict | None = None,
                  max_grid: Callable | None = None, streaming: bool = False, fold: Callable | None = None,
                  calibration_folds: int | None = None, streams: str | None = None):
    """Decorator: the decorated factory becomes the registry entry ``name``."""
    def register(factory):
        keys = search_keys or {k: k for k in grid}
        HEADS[name] = HeadSpec(name, description, factory, grid, keys, linear, max_grid, streaming, fold,
                               calibration_folds, "partial_fit" if streaming else streams)
        return factory

    return register


@register_head("logreg", "multinomial logistic regression (streams when the matrix would not fit in memory)",
               {"C": [0.001, 0.01, 0.1, 1.0]}, linear=True, fold=_fold_logreg, streams="lbfgs")
def _logreg(p, class_weight, seed, probability, n_jobs):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=p.get("C", 0.01), max_iter=2000, class_weight=class_weight, random_state=seed)


@register_head("svm", "SVM with an RBF kernel (Platt-scaled probabilities)",
               {"C": [1.0, 10.0, 100.0], "gamma": ["scale"]}, linear=False, calibration_folds=5)
def _svm(p, class_weight, seed, probability, n_jobs):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    clf = SVC(C=p.get("C", 10.0), gamma=p.get("gamma", "scale"), kernel="rbf", class_weight=class_weight,
              random_state=seed)
    if probability:  # Platt scaling, as SVC(probability=True) did before scikit-learn 1.9
        clf = CalibratedClassifierCV(clf, method="sigmoid", cv=p.get(CALIBRATION, 5), ensemble=False)
    return clf


@register_head("linear_svm", "linear SVM (calibrated probabilities)", {"C": [0.0001, 0.001, 0.01, 0.1]},
               linear=True, fold=_fold_calibrated_linear_svm, calibration_folds=3)
def _linear_svm(p, class_weight, seed, probability, n_jobs):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    # The dual solver: on 2,184 x 1,280 embeddings it fit C=0.1 in 1 s; "auto" picked
    # the primal one (more rows than features), which took 34 s.
    clf = LinearSVC(C=p.get("C", 0.001), dual=True, class_weight=class_weight, random_state=seed, max_iter=5000)
    return CalibratedClassifierCV(clf, cv=p.get(CALIBRATION, 3)) if probability else clf


def _knn_max_grid(grid: dict, rows_per_fold: int) -> dict:
    """k cannot exceed the rows of a training fold."""
    return {**grid, "k": [k for k in grid["k"] if k <= rows_per_fold] or [1]} if "k" in grid else grid


@register_head("knn", "k nearest neighbours, distance-weighted", {"k": [3, 5, 11, 21]}, linear=False,
               search_keys={"k": "n_neighbors"}, max_grid=_knn_max_grid)
def _knn(p, class_weight, seed, probability, n_jobs):  # no class weights: knn ignores them
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=int(p.get("k", 5)), weights="distance", n_jobs=n_jobs)


@register_head("sgd", "logistic regression by SGD, trained a block of rows at a time (for caches "
               "larger than memory)", {"alpha": [1e-5, 1e-4, 1e-3, 1e-2]}, linear=True, streaming=True,
               fold=_fold_sgd)
def _sgd(p, class_weight, seed, probability, n_jobs):
    from sklearn.linear_model import SGDClassifier

    # average=True (averaged SGD) settles where plain SGD keeps jumping with each block.
    return SGDClassifier(loss="log_loss", alpha=p.get("alpha", 1e-4), average=True, class_weight=class_weight,
                         random_state=seed)


def get_head_spec(name: str) -> HeadSpec:
    try:
        return HEADS[name]
    except KeyError:
        raise UsageError(f"{{head}} {name}: unknown head; choose one of: {', '.join(HEADS)}") from None


def check_params(fixed: dict | None) -> dict:
    """Check values the caller fixed (``C``, ``gamma``, ``k``); return those given, cleaned.

    Raises:
        UsageError: a value no head can take (NaN, infinite, zero or negative).
    """
    out = {}
    for key, value in (fixed or {}).items():
        if value is None:
            continue
        if key == "gamma" and value in ("scale", "auto"):
            out[key] = value
        elif key == "alpha":  # SGD's steps overflow far from its grid (1e300 ended in scikit-learn's traceback)
            out[key] = validate.positive(value, key)
            if not 1e-12 <= out[key] <= 1e3:
                raise UsageError(f"{{alpha}} {value}: give a number from 1e-12 to 1000")
        elif key == "k":
            out[key] = validate.whole(value, "k", 1, what=" of neighbours")
        else:
            number = value
            if isinstance(value, str):  # a number typed on a command line (--gamma takes words too)
                try:
                    number = float(value)
                except ValueError:
                    pass
            out[key] = validate.positive(number, key, also=", 'scale' or 'auto'" if key == "gamma" else "")
    return out


def check_search(cv: int = 5, n_jobs: int | None = None, seed: int = 0) -> None:
    """Check the search's settings: folds, parallel jobs and seed.

    Raises:
        UsageError: fewer than two folds, zero jobs, or a seed out of range.
    """
    validate.seed(seed)
    validate.whole(cv, "cv", 2, what=" of folds")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0):
        raise UsageError(f"{{n_jobs}} {n_jobs}: give a number of parallel jobs, or -1 for every core")


def check_epochs(epochs: int | None, spec: HeadSpec | None = None) -> None:
    """Check a number of passes given for a head that streams.

    Raises:
        UsageError: not a whole number from 1 to 1000, or given for a head that has no epochs.
    """
    if epochs is None:
        return
    if spec is not None and not spec.streaming:
        raise UsageError(f"{{epochs}} {epochs}: head {spec.name} fits in one call and has no epochs; "
                         f"{{epochs}} is for {', '.join(n for n, s in HEADS.items() if s.streaming)}")
    validate.whole(epochs, "epochs", 1, 1000, what=" of passes")


def calibration_folds(name: str, labels) -> int | None:
    """The calibration folds a head can use on rows with these labels (None: it calibrates nothing).

    Raises:
        UsageError: a class has a single row: cross-validation cannot calibrate on it.
    """
    spec = get_head_spec(name)
    if not spec.calibration_folds:
        return None
    counts = np.bincount(np.asarray(labels))
    fewest = int(counts[counts > 0].min())
    if fewest < 2:
        others = ", ".join(n for n, s in HEADS.items() if not s.calibration_folds and not s.streaming)
        raise UsageError(f"{{head}} {name}: its probabilities are calibrated by cross-validation, which needs at "
                         f"least two training images of every class, and one class has {fewest}; add photos, or "
                         f"use {others}")
    return min(spec.calibration_folds, fewest)


def make_head(name: str, params: dict | None = None, class_weight: str | None = None,
              seed: int = 0, probability: bool = True, n_jobs: int | None = None,
              calibration: int | None = None):
    """An unfitted head pipeline: ``Pipeline(StandardScaler(), the entry's estimator)``.

    Args:
        name: a key of :data:`HEADS`.
        params: values for the spec's grid keys (``C``, ``gamma``, ``k``); defaults otherwise.
        class_weight: None or "balanced" (knn has no class weights and ignores it).
        probability: False gives the cheaper estimator used inside the search (the RBF SVM
            without Platt scaling, the linear SVM without calibration).
        calibration: the calibration folds (:func:`calibration_folds`); the head's own by default.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    spec = get_head_spec(name)
    params = dict(params or {})
    if calibration:
        params[CALIBRATION] = calibration
    clf = spec.factory(params, class_weight, seed, probability, n_jobs)
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


@dataclass
class FittedHead:
    """A head fitted on train + val, with how it was chosen."""

    name: str
    pipeline: object
    params: dict
    cv_accuracy: float | None
    search_seconds: float
    fit_seconds: float
    val_accuracy: float | None = None  # where the settings were chosen on the validation split
    val: tuple | None = None  # (ids, labels, probabilities) of val by a copy fitted on train alone, where made
    calibration: int | None = None  # the calibration folds it was fitted with (the SVMs)
    passes: int | None = None  # passes over the cache, for a head fitted a block at a time by L-BFGS

    def predict_proba(self, X) -> np.ndarray:
        return self.pipeline.predict_proba(X)


def plain(params: dict) -> dict:
    """Parameters as plain Python values (NumPy scalars become numbers), for JSON and the record."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


HEAD_FORMAT = 1
# Types a head file may hold beyond skops' defaults: exactly what the heads above use.
TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
)


def save_head(path, fitted: FittedHead, meta: dict) -> None:
    """Save a fitted head with what a predictor must match (class names, backbone, ...).

    The format is skops', made to load scikit-learn models without running arbitrary code.
    """
    import skops.io as sio

    sio.dump({"format": HEAD_FORMAT, "head": fitted.name, "params": fitted.params,
              "pipeline": fitted.pipeline, "meta": meta}, path)


def load_head(path) -> dict:
    """Load a head saved by :func:`save_head`, refusing any type a head never needs.

    Raises:
        UsageError: not a head file, or it holds types outside the allow-list.
    """
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - a file skops cannot even list is not a head file, whatever it is
        raise UsageError(f"{path}: not a head file written by classify.py ({exc})") from None
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UsageError(f"{path}: refusing to load types a head never holds: {', '.join(unexpected)}")
    obj = sio.load(path, trusted=list(untrusted))
    if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
        raise UsageError(f"{path}: not a head file of format {HEAD_FORMAT}")
    return obj
