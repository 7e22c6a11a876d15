"""The head registry: scikit-learn heads for cached embeddings (the frozen-base baseline).

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

from ..errors import UsageError
from .linear import fold_calibrated_linear_svm, fold_logreg, fold_sgd


@dataclass(kw_only=True, frozen=True)
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
    fold: Callable | None = None
    calibration_folds: int | None = None
    streams: str | None = None

    @property
    def always_streams(self) -> bool:
        """A ``partial_fit`` head (sgd) is only ever fitted a block of rows at a time; it has epochs."""
        return self.streams == "partial_fit"


HEADS: dict[str, HeadSpec] = {}
CALIBRATION = "_calibration_folds"  # the factory's key for the calibration folds (not a recorded setting)


def register_head(name: str, description: str, grid: dict, linear: bool, *, search_keys: dict | None = None,
                  max_grid: Callable | None = None, fold: Callable | None = None,
                  calibration_folds: int | None = None, streams: str | None = None):
    """Decorator: the decorated factory becomes the registry entry ``name`` (see :class:`HeadSpec`)."""
    def register(factory):
        keys = search_keys or {k: k for k in grid}
        HEADS[name] = HeadSpec(name=name, description=description, factory=factory, grid=grid, search_keys=keys,
                               linear=linear, max_grid=max_grid, fold=fold,
                               calibration_folds=calibration_folds, streams=streams)
        return factory

    return register


@register_head("logreg", "multinomial logistic regression (streams when the matrix would not fit in memory)",
               {"C": [0.001, 0.01, 0.1, 1.0]}, linear=True, fold=fold_logreg, streams="lbfgs")
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
               linear=True, fold=fold_calibrated_linear_svm, calibration_folds=3)
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
               "larger than memory)", {"alpha": [1e-5, 1e-4, 1e-3, 1e-2]}, linear=True,
               streams="partial_fit", fold=fold_sgd)
def _sgd(p, class_weight, seed, probability, n_jobs):
    from sklearn.linear_model import SGDClassifier

    # Averaged SGD at a constant step (Bach and Moulines, NeurIPS 2013: for logistic regression the average of
    # constant-step iterates converges where a decaying step stalls). Measured on Lite0's flowers (5-fold CV on
    # train + val, the test split untouched, the same search): sklearn's default "optimal" decaying step 0.8956
    # (bf16) and 0.8975 (fp32), logreg 0.9093 and 0.9109; a constant 0.01, chosen by validation log-loss,
    # 0.9018 and 0.9016.
    return SGDClassifier(loss="log_loss", alpha=p.get("alpha", 1e-4), average=True, learning_rate="constant",
                         eta0=0.01, class_weight=class_weight, random_state=seed)


def get_head_spec(name: str) -> HeadSpec:
    try:
        return HEADS[name]
    except KeyError:
        raise UsageError(f"{{head}} {name}: unknown head; choose one of: {', '.join(HEADS)}") from None


def make_head(name: str, params: dict | None = None, *, class_weight: str | None = None,
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
