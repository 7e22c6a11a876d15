"""classify.py end to end on caches written by the store module."""

import json

import h5py
import numpy as np
import pytest

import classify
from conftest import blobs, write_cache
from features import heads, runs, store


def run(argv, capsys):
    code = classify.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cache(tmp_path):
    X, y = blobs()
    return write_cache(tmp_path / "emb" / "synthetic" / "toy-8.h5", X, y, ["ant", "bee", "cow"])


def test_run_writes_folder_row_and_json(cache, tmp_path, capsys):
    out_dir = tmp_path / "runs"
    code, out, err = run(["--features", str(cache), "--out", str(out_dir), "--json", "--n-jobs", "1", "-q"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["accuracy"] >= 0.95 and result["method"] == "frozen-features" and result["head"] == "logreg"
    assert set(result["metrics"]["per_class"]) == {"ant", "bee", "cow"}
    folder = out_dir / result["run_dir"].split("/")[-1]
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "confusion.png", "head.skops", "metrics.json", "predictions.csv", "report.txt"]
    assert "bee" in (folder / "report.txt").read_text()
    assert (folder / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    rows = runs.read_results(out_dir)
    assert len(rows) == 1 and rows[0]["run_dir"] == result["run_dir"]
    for key in ("dataset", "backbone", "method", "head", "accuracy", "precision_macro", "recall_macro",
                "f1_macro", "extract_seconds", "fit_seconds", "predict_seconds", "run_dir"):
        assert key in rows[0]
    assert rows[0]["extract_seconds"] == 1.5  # read from the cache
    head = heads.load_head(folder / "head.skops")
    assert head["meta"]["class_names"] == ["ant", "bee", "cow"] and head["meta"]["backbone"] == "toy"
    c = store.read_cache(cache)
    X_test, y_test = c.split("test")
    assert (head["pipeline"].predict(X_test) == y_test).mean() == pytest.approx(result["accuracy"])


def test_newest_cache_is_the_default(cache, tmp_path, capsys):
    code, out, err = run(["--embeddings-dir", str(tmp_path / "emb"), "--out", str(tmp_path / "r"), "--json",
                          "--model", "knn", "--n-jobs", "1", "-q"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["features"] == [str(cache)]


def test_two_caches_are_concatenated(tmp_path, capsys):
    X, y = blobs()
    a = write_cache(tmp_path / "a.h5", X[:, :8], y, ["a", "b", "c"])
    b = write_cache(tmp_path / "b.h5", X[:, 8:], y, ["a", "b", "c"], attrs={"backbone": "other"})
    code, out, err = run(["--features", str(a), str(b), "--out", str(tmp_path / "r"), "--json", "--n-jobs", "1",
                          "-q"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["backbone"] == "toy+other" and result["accuracy"] >= 0.95


def test_rows_are_matched_by_id_not_by_position(tmp_path):
    X, y = blobs()
    names = ["a", "b", "c"]
    a = store.read_cache(write_cache(tmp_path / "a.h5", X, y, names))
    order = np.random.default_rng(0).permutation(len(y))
    ids = [f"{names[label]}/{n}.jpg" for n, label in enumerate(y)]
    splits = a.splits
    b = store.read_cache(write_cache(tmp_path / "b.h5", X[order] * 2, y[order], names, splits=splits[order],
                                     ids=[ids[i] for i in order]))
    joined = store.concat_caches([a, b])
    np.testing.assert_allclose(joined.embeddings[:, 16:], 2 * X.astype(np.float32))


def _nothing_written(tmp_path):
    return not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_inputs_exit_2_and_write_nothing(cache, tmp_path, capsys):
    X, y = blobs()
    other = write_cache(tmp_path / "other.h5", X[:90], y[:90], ["ant", "bee", "cow"])
    no_test = write_cache(tmp_path / "notest.h5", X, y, ["ant", "bee", "cow"], splits=np.zeros(len(y), np.uint8))
    half = tmp_path / "half.h5"
    half.write_bytes(cache.read_bytes())
    with h5py.File(half, "r+") as f:
        f.attrs["complete"] = False
    cases = [
        (["--features", str(cache), str(other)], "different images"),
        (["--features", str(no_test)], "no test rows"),
        (["--features", str(half)], "incomplete"),
        (["--features", str(tmp_path / "missing.h5")], "no such feature cache"),
        (["--features", str(cache), "--model", "forest"], "--model forest: unknown head"),
        (["--features", str(cache), "--C", "-1"], "--C"),
        (["--features", str(cache), "--gamma", "wide"], "--gamma"),
        (["--embeddings-dir", str(tmp_path / "none")], "no complete feature cache"),
    ]
    for argv, needle in cases:
        code, out, err = run(argv + ["--out", str(tmp_path / "runs"), "-q"], capsys)
        assert code == 2 and needle in err, (argv, err)
        assert _nothing_written(tmp_path), argv


def test_binary_cache_reports_roc_auc(tmp_path, capsys):
    X, y = blobs(classes=2)
    path = write_cache(tmp_path / "b.h5", X, y, ["cat", "dog"])
    code, out, _ = run(["--features", str(path), "--model", "linear_svm", "--out", str(tmp_path / "r"), "--json",
                        "--n-jobs", "1", "-q"], capsys)
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["roc_auc"] > 0.95
