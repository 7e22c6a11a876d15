"""Heads and metrics on synthetic embeddings: they learn what is there and nothing else."""

import numpy as np
import pytest

from features import heads
from features.data import stratified_split
from features.errors import UsageError
from features.records import metrics
from helpers import blobs


def _splits(y):
    codes = stratified_split(y, (0.7, 0.15, 0.15), 0)
    return [(codes == i) for i in range(3)]


@pytest.mark.parametrize("name", sorted(heads.HEADS))
def test_separable_classes_are_learnt(name):
    X, y = blobs()
    tr, va, te = _splits(y)
    fitted = heads.fit_head(name, X[tr], y[tr], X[va], y_val=y[va], n_jobs=1)
    proba = fitted.predict_proba(X[te])
    assert proba.shape == (te.sum(), 3) and np.allclose(proba.sum(axis=1), 1)
    assert metrics.score(y[te], proba, ["a", "b", "c"])["accuracy"] >= 0.95
    assert fitted.cv_accuracy is not None and set(fitted.params) >= set(heads.HEADS[name].grid)


@pytest.mark.parametrize("name", sorted(heads.HEADS))
def test_shuffled_labels_stay_at_chance(name):
    X, y = blobs(n_per_class=100, spread=0.5)
    y = np.random.default_rng(1).permutation(y)
    tr, va, te = _splits(y)
    fitted = heads.fit_head(name, X[tr], y[tr], X[va], y_val=y[va], n_jobs=1)
    acc = metrics.score(y[te], fitted.predict_proba(X[te]), ["a", "b", "c"])["accuracy"]
    assert acc < 0.55  # chance is 1/3; 45 test rows


def test_fixed_parameters_are_not_searched():
    X, y = blobs()
    fitted = heads.fit_head("logreg", X, y, fixed={"C": 0.5}, n_jobs=1)
    assert fitted.params == {"C": 0.5} and fitted.cv_accuracy is None
    assert fitted.pipeline.named_steps["clf"].C == 0.5


def test_scaling_is_learnt_from_the_training_rows_only():
    X, y = blobs()
    fitted = heads.fit_head("logreg", X[:100], y[:100], fixed={"C": 1.0}, n_jobs=1)
    np.testing.assert_allclose(fitted.pipeline.named_steps["scale"].mean_, X[:100].mean(axis=0))


def test_unknown_head_lists_the_valid_ones():
    with pytest.raises(UsageError, match="logreg, svm, linear_svm, knn"):
        heads.get_head_spec("forest")


def test_score_on_a_known_example():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    s = metrics.score(y, proba, ["cat", "dog"])
    assert s["accuracy"] == 0.75 and s["confusion_matrix"] == [[1, 1], [0, 2]]
    assert s["per_class"]["cat"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert s["precision_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert s["roc_auc"] == 1.0  # every dog scores above every cat
    assert s["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))


def test_head_file_round_trip_and_refusals(tmp_path):
    import pickle

    import skops.io as sio

    X, y = blobs()
    fitted = heads.fit_head("knn", X, y, n_jobs=1)
    path = tmp_path / "head.skops"
    heads.save_head(path, fitted, {"class_names": ["a", "b", "c"], "backbone": "toy"})
    loaded = heads.load_head(path)
    np.testing.assert_allclose(loaded["pipeline"].predict_proba(X), fitted.predict_proba(X))
    assert loaded["meta"]["backbone"] == "toy"

    evil = tmp_path / "evil.skops"
    sio.dump({"format": heads.HEAD_FORMAT, "pipeline": np.random.default_rng(0).bit_generator}, evil)
    with pytest.raises(UsageError, match="refusing"):
        heads.load_head(evil)
    pickled = tmp_path / "pickled.skops"
    pickled.write_bytes(pickle.dumps({"format": 1}))
    with pytest.raises(UsageError, match="not a head file"):
        heads.load_head(pickled)


def test_every_head_is_one_registry_entry():
    from sklearn.pipeline import Pipeline

    assert {name for name, spec in heads.HEADS.items() if spec.linear} == {"logreg", "linear_svm", "sgd"}
    for name, spec in heads.HEADS.items():
        assert spec.name == name and set(spec.search_keys) == set(spec.grid)
        assert isinstance(heads.make_head(name), Pipeline)


def test_a_new_head_needs_only_its_entry(monkeypatch):
    """One decorated factory is the whole head: searched, fitted and scored like the others."""
    from sklearn.naive_bayes import GaussianNB

    monkeypatch.setattr(heads, "HEADS", dict(heads.HEADS))
    heads.register_head("nb", "Gaussian naive Bayes", {"var_smoothing": [1e-9, 1e-3]}, linear=False)(
        lambda p, class_weight, seed, probability, n_jobs: GaussianNB(var_smoothing=p.get("var_smoothing", 1e-9)))
    X, y = blobs(classes=3)
    labels = stratified_split(y, (0.7, 0.15, 0.15), 0)
    fitted = heads.fit_head("nb", X[labels == 0], y[labels == 0], cv=3)
    assert fitted.params["var_smoothing"] in (1e-9, 1e-3) and fitted.cv_accuracy > 0.9
    assert fitted.predict_proba(X[labels == 2]).shape == ((labels == 2).sum(), 3)
