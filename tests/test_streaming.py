"""The heads that stream (sgd; logreg by L-BFGS): block reads, the same results files, memory refusals of the
others."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from features import cache as store
from features import heads
from features.cli import classify
from features.data.splits import TEST
from features.errors import CacheError, UsageError
from features.heads import blocks, streaming
from features.heads.memory import check_fits_in_memory
from helpers import blobs, last_json, write_cache


@pytest.fixture
def cache(tmp_path):
    X, y = blobs(n_per_class=300, classes=3, dim=16, spread=1.5)
    return write_cache(tmp_path / "emb" / "synthetic" / "toy-8.h5", X, y, ["ant", "bee", "cow"])


def test_sgd_trains_in_blocks_and_writes_what_every_head_writes(cache, tmp_path, capsys, monkeypatch, run_main):
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 64)
    monkeypatch.setattr(streaming, "BLOCKS_PER_STEP", 2)
    reads = []
    original = store.CacheRows.read

    def read(self, start, stop):
        reads.append(stop - start)
        return original(self, start, stop)

    monkeypatch.setattr(store.CacheRows, "read", read)
    monkeypatch.setattr(store, "read_cache", None)  # the matrix is never loaded whole
    out_dir = tmp_path / "runs"
    code, out, err = run_main(classify.main, ["--model", "sgd", "--features", str(cache), "--out", str(out_dir),
                                              "--json", "-q"])
    assert code == 0, err
    assert reads and max(reads) <= 64
    result = last_json(out)
    assert result["head"] == "sgd" and set(result["params"]) == {"alpha", "epochs"}
    assert result["params"]["alpha"] in heads.HEADS["sgd"].grid["alpha"] and result["val_accuracy"] > 0.8
    assert result["accuracy"] > 0.8 and result["n_test"] == 135
    folder = out_dir / result["run_dir"].split("/")[-1]
    assert {p.name for p in folder.iterdir()} >= {"head.skops", "metrics.json", "predictions.csv", "confusion.png"}
    monkeypatch.undo()
    head = heads.load_head(folder / "head.skops")  # a pipeline like every head's: predict.py reads it
    c = store.read_cache(cache)
    X_test, y_test = c.split("test")
    assert (head["pipeline"].predict(X_test) == y_test).mean() == pytest.approx(result["accuracy"])
    lines = (folder / "predictions.csv").read_text().splitlines()
    assert len(lines) == 136 and lines[1].split(",")[0] == c.ids[c.splits == TEST][0]


def test_sgd_is_close_to_logreg_and_its_choice_is_made_on_val(cache, tmp_path, capsys, run_main):
    results = {}
    for model in ("sgd", "logreg"):
        code, out, err = run_main(classify.main, ["--model", model, "--features", str(cache), "--out",
                                                  str(tmp_path / "r"), "--json",
                              "-q", "--n-jobs", "1"])
        assert code == 0, err
        results[model] = last_json(out)
    assert abs(results["sgd"]["accuracy"] - results["logreg"]["accuracy"]) < 0.05
    fixed = run_main(classify.main, ["--model", "sgd", "--alpha", "0.001", "--epochs", "2", "--features", str(cache),
                                     "--out",
                 str(tmp_path / "r"), "--json", "-q", "--class-weight", "balanced"])
    assert fixed[0] == 0, fixed[2]
    row = last_json(fixed[1])
    assert row["params"] == {"alpha": 0.001, "epochs": 2} and row["search_seconds"] < row["fit_seconds"] + 1


def test_caches_side_by_side_stream_as_they_concatenate(tmp_path):
    X, y = blobs(n_per_class=50, classes=2, dim=6)
    ids = [f"img{n}.jpg" for n in range(len(y))]
    a = write_cache(tmp_path / "a.h5", X[:, :4], y, ["a", "b"], ids=ids)
    order = np.random.default_rng(1).permutation(len(y))  # the same images, written in another order
    splits = store.read_cache(a).splits
    b = write_cache(tmp_path / "b.h5", X[order, 4:], y[order], ["a", "b"], splits=splits[order],
                    ids=[ids[i] for i in order])
    whole = store.concat_caches([store.read_cache(a), store.read_cache(b)])
    with store.CacheRows([a, b]) as rows:
        assert rows.dim == 6 and rows.attrs["backbone"] == "toy+toy"
        np.testing.assert_array_equal(np.vstack([rows.read(s, s + 7) for s in range(0, rows.n, 7)]),
                                      whole.embeddings)
    c = write_cache(tmp_path / "c.h5", X[:90, 4:], y[:90], ["a", "b"], ids=ids[:90])
    with pytest.raises(CacheError, match="different images"):
        store.CacheRows([a, c])


def test_a_damaged_block_is_refused_when_it_is_read(cache):
    with h5py.File(cache, "r+") as f:
        f["embeddings"][200, 3] = np.nan
    with pytest.raises(CacheError, match="checksum"):
        store.CacheRows([cache])
    with store.CacheRows([cache], verify_checksum=False) as rows:
        rows.read(0, 100)
        with pytest.raises(CacheError, match="rows 128..255 hold NaN"):
            rows.read(128, 256)


def test_heads_that_hold_the_matrix_say_when_it_would_not_fit(cache, tmp_path, capsys, monkeypatch, run_main):
    with pytest.raises(UsageError, match=r"head=sgd"):
        check_fits_in_memory([cache], "svm", available=1000)
    check_fits_in_memory([cache], "svm", available=10**9)

    class Tiny:
        available = 10_000

    monkeypatch.setattr("psutil.virtual_memory", lambda: Tiny)
    code, out, err = run_main(classify.main, ["--model", "svm", "--features", str(cache), "--out",
                                              str(tmp_path / "r")])
    assert code == 2 and "Traceback" not in err
    assert "holds them in memory" in err and "train --model logreg or --model sgd, which read them a block" in err
    code, out, err = run_main(classify.main, ["--model", "sgd", "--features", str(cache), "--out",
                                              str(tmp_path / "r"), "-q"])
    assert code == 0, err


def test_bad_epochs_and_a_search_without_val_rows_are_refused(cache, tmp_path, capsys, run_main):
    for argv, message in ((["--model", "logreg", "--epochs", "3"], "--epochs 3: head logreg fits in one call"),
                          (["--model", "sgd", "--epochs", "0"], "--epochs 0: give a whole number"),
                          (["--model", "sgd", "--alpha", "-1"], "--alpha -1.0: give a finite number")):
        code, out, err = run_main(classify.main, argv + ["--features", str(cache), "--out", str(tmp_path / "r")])
        assert code == 2 and message in err, err
    X, y = blobs()
    no_val = write_cache(tmp_path / "nv.h5", X, y, ["a", "b", "c"], splits=np.arange(len(y)) % 2 * 2)
    code, out, err = run_main(classify.main, ["--model", "sgd", "--features", str(no_val), "--out",
                                              str(tmp_path / "r")])
    assert code == 2 and "no validation rows" in err and "--alpha 0.0001" in err and "--epochs 10" in err
    code, out, err = run_main(classify.main, ["--model", "sgd", "--alpha", "0.0001", "--epochs", "3", "--features",
                                              str(no_val),
                          "--out", str(tmp_path / "r"), "-q"])
    assert code == 0, err



def test_an_sgd_run_joins_an_ensemble(tmp_path, run_main):
    """Its validation probabilities come from the chosen candidate trained on train alone."""
    from features.cli import ensemble
    from features.reports.ensemble import load_member

    X, y = blobs(n_per_class=60, spread=2.0)
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    dirs = []
    for argv in (["--model", "sgd"], ["--model", "sgd", "--alpha", "0.001", "--epochs", "3"], ["--model", "logreg"]):
        code, out, err = run_main(classify.main, [*argv, "--features", str(cache), "--out", str(tmp_path / "r"),
                                                  "--json", "-q", "--n-jobs", "1"])
        assert code == 0, err
        dirs.append(last_json(out)["run_dir"])
    for run_dir in dirs[:2]:  # chosen on val, and fixed (a copy fitted on train alone scores val)
        ids, labels, proba = load_member(run_dir).splits["val"]
        assert len(ids) == int((store.read_cache(cache).splits == 1).sum()) and proba.shape == (len(ids), 3)
        assert np.allclose(proba.sum(axis=1), 1) and np.mean(proba.argmax(axis=1) == labels) > 0.8
    code, out, err = run_main(ensemble.main, [dirs[0], dirs[2], "--out", str(tmp_path / "r"), "--json"])
    assert code == 0, err
    assert last_json(out)["members"] == [dirs[0], dirs[2]]


@pytest.mark.parametrize("classes", [3, 2])  # multinomial, and binomial (one row of coefficients) as logreg has
def test_streamed_logreg_reaches_the_in_memory_optimum(classes, tmp_path, monkeypatch):
    """The same C, the same rows: the L-BFGS passes over blocks land where scikit-learn's in-memory fit does.

    At scikit-learn's own tolerance (a gradient below 1e-4) both stop near the optimum and predict alike.
    Run both to a gradient below 1e-9 on the same numbers (the cache's float32 values, computed in float64
    on both sides), they meet: coefficients and intercepts within 1e-5.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from features.heads import lbfgs
    from features.heads.search import fit_head, fit_streamed

    X, y = blobs(n_per_class=150, classes=classes, dim=24, spread=2.5)
    path = write_cache(tmp_path / "c.h5", X, y, [f"c{k}" for k in range(classes)])
    cache = store.read_cache(path)
    monkeypatch.setattr(lbfgs, "PASS_ROWS", 64)  # many blocks on a small cache
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 64)
    reads = []
    real = store.CacheRows.read

    def read(self, start, stop):
        reads.append(stop - start)
        return real(self, start, stop)

    monkeypatch.setattr(store.CacheRows, "read", read)
    with store.CacheRows([path]) as rows:
        streamed = fit_streamed("logreg", rows, fixed={"C": 0.1})
    memory = fit_head("logreg", *cache.split("train"), *cache.split("val"), fixed={"C": 0.1}, n_jobs=1)
    assert np.array_equal(streamed.pipeline.predict(cache.embeddings), memory.pipeline.predict(cache.embeddings))
    assert max(reads) <= 64 and streamed.passes > 1
    assert streamed.pipeline.named_steps["clf"].coef_.shape == memory.pipeline.named_steps["clf"].coef_.shape
    monkeypatch.setattr(lbfgs, "TOL", 1e-9)
    with store.CacheRows([path]) as rows:
        tight = fit_streamed("logreg", rows, fixed={"C": 0.1}).pipeline.named_steps
    fit_rows = cache.splits != 2
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, tol=1e-9, max_iter=10_000)).fit(
        cache.embeddings[fit_rows].astype(np.float64), cache.labels[fit_rows])
    np.testing.assert_allclose(tight["scale"].mean_, reference[0].mean_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tight["clf"].coef_, reference[1].coef_, atol=1e-5)
    np.testing.assert_allclose(tight["clf"].intercept_, reference[1].intercept_, atol=1e-5)


def test_logreg_streams_by_itself_when_the_matrix_would_not_fit(tmp_path, run_main, monkeypatch):
    from features.cli import ensemble
    from features.heads import load_head

    X, y = blobs(n_per_class=80)
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])

    class Tiny:
        available = 1000

    monkeypatch.setattr("psutil.virtual_memory", lambda: Tiny)
    code, out, err = run_main(classify.main, ["--model", "logreg", "--features", str(cache), "--out",
                                              str(tmp_path / "r"), "--json", "-q"])
    assert code == 0, err
    row = last_json(out)
    assert row["passes"] > 1 and row["val_accuracy"] > 0.9 and row["params"]["C"] in (0.001, 0.01, 0.1, 1.0)
    head = load_head(Path(row["run_dir"]) / "head.skops")
    assert type(head["pipeline"].named_steps["clf"]).__name__ == "LogisticRegression"
    code, out, err = run_main(classify.main, ["--model", "knn", "--features", str(cache), "--out",
                                              str(tmp_path / "r"), "-q"])
    assert code == 2 and "train --model logreg or --model sgd, which read them a block at a time" in err
    monkeypatch.undo()
    code, out, err = run_main(classify.main, ["--model", "sgd", "--features", str(cache), "--out",
                                              str(tmp_path / "r"), "--json", "-q"])
    assert code == 0, err
    other = last_json(out)["run_dir"]
    code, out, err = run_main(ensemble.main, [row["run_dir"], other, "--out", str(tmp_path / "r")])
    assert code == 0, err  # its validation probabilities come from the train-only fit of the chosen C
    from features.heads import fold_head

    linear = fold_head(head["pipeline"], "logreg")
    np.testing.assert_allclose(linear.predict_proba(X), head["pipeline"].predict_proba(X), atol=1e-8)


def _zero_half_in_another_process(path):
    """What the hostile user did: another process zeroes half the rows in place while the fit reads them."""
    import os
    import subprocess
    import sys

    code = ("import h5py, sys\nwith h5py.File(sys.argv[1], 'r+') as f:\n    d = f['embeddings']\n"
            "    d[: len(d) // 2] = 0\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                   env={**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"})  # past this process's shared lock


@pytest.mark.parametrize("head", ["logreg", "sgd"])
def test_a_cache_changed_in_place_during_a_streamed_fit_ends_it_in_one_line(head, tmp_path, run_main, monkeypatch):
    """The fit checks the cache when it opens it, then reads it pass after pass: every block read is compared
    with the digest of that pass, so rows zeroed by another process after the first pass end the fit (exit 2,
    one line), and no run folder or results row is written as if the cache were verified."""
    from features.heads import lbfgs

    X, y = blobs(n_per_class=3000, classes=3, dim=32, spread=1.5)  # 1.1 MB: past HDF5's chunk cache
    cache = write_cache(tmp_path / "emb" / "c.h5", X, y, ["a", "b", "c"])
    changed = []

    def after_the_first_pass(wrapped):
        def call(*args, **kwargs):
            result = wrapped(*args, **kwargs)
            if not changed:
                _zero_half_in_another_process(cache)
                changed.append(1)
            return result
        return call

    if head == "logreg":
        monkeypatch.setattr(lbfgs.Objective, "__call__", after_the_first_pass(lbfgs.Objective.__call__))
    else:
        monkeypatch.setattr(streaming, "steps", after_the_first_pass(streaming.steps))
    flags = ["--stream"] if head == "logreg" else []
    code, out, err = run_main(classify.main, ["--model", head, *flags, "--features", str(cache), "--out",
                                              str(tmp_path / "runs"), "--C" if head == "logreg" else "--alpha",
                                              "0.1" if head == "logreg" else "0.001", "-q"])
    assert changed and code == 2, err
    assert "changed since the cache was opened and checked" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
