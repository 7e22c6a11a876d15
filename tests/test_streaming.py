"""The head that streams (sgd): block reads, the same results files, memory refusals of the others."""


import h5py
import numpy as np
import pytest

import classify
from conftest import blobs, last_json, write_cache
from features import cache as store
from features import heads
from features.data.splits import TEST
from features.errors import CacheError, UsageError
from features.heads import streaming
from features.heads.classify import check_fits_in_memory


@pytest.fixture
def cache(tmp_path):
    X, y = blobs(n_per_class=300, classes=3, dim=16, spread=1.5)
    return write_cache(tmp_path / "emb" / "synthetic" / "toy-8.h5", X, y, ["ant", "bee", "cow"])


def test_sgd_trains_in_blocks_and_writes_what_every_head_writes(cache, tmp_path, capsys, monkeypatch, run_main):
    monkeypatch.setattr(streaming, "BLOCK_ROWS", 64)
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
    code, out, err = run_main(classify.main, ["--model", "logreg", "--features", str(cache), "--out",
                                              str(tmp_path / "r")])
    assert code == 2 and "Traceback" not in err
    assert "holds them in memory" in err and "train --model sgd, which reads them a block at a time" in err
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
    import ensemble
    from features.results.ensemble import load_member

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
