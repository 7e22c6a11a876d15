"""classify.py end to end on caches written by the store module."""



import h5py
import numpy as np
import pytest

from features import cache as store
from features import heads
from features.cli import classify
from features.records import runs
from helpers import blobs, fill, last_json, tmpfs, write_cache


@pytest.fixture
def cache(tmp_path):
    X, y = blobs()
    return write_cache(tmp_path / "emb" / "synthetic" / "toy-8.h5", X, y, ["ant", "bee", "cow"])


def test_run_writes_folder_row_and_json(cache, tmp_path, capsys, run_main):
    out_dir = tmp_path / "runs"
    code, out, err = run_main(classify.main, ["--features", str(cache), "--out", str(out_dir), "--json", "--n-jobs",
                                              "1", "-q"])
    assert code == 0, err
    result = last_json(out)
    assert result["accuracy"] >= 0.95 and result["method"] == "frozen-features" and result["head"] == "logreg"
    assert set(result["metrics"]["per_class"]) == {"ant", "bee", "cow"}
    folder = out_dir / result["run_dir"].split("/")[-1]
    wrong = ["top_losses.png"] if result["accuracy"] < 1 else []  # drawn where a test photo is wrong
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "config.json", "confusion.png", "head.skops", "metrics.json", "predictions.csv", "probabilities.npz",
        "report.txt", *wrong])
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


def test_newest_cache_is_the_default(cache, tmp_path, capsys, run_main):
    code, out, err = run_main(classify.main, ["--embeddings-dir", str(tmp_path / "emb"), "--out",
                                              str(tmp_path / "r"), "--json",
                          "--model", "knn", "--n-jobs", "1", "-q"])
    assert code == 0, err
    assert last_json(out)["features"] == [str(cache)]


def test_two_caches_are_concatenated(tmp_path, capsys, run_main):
    X, y = blobs()
    a = write_cache(tmp_path / "a.h5", X[:, :8], y, ["a", "b", "c"])
    b = write_cache(tmp_path / "b.h5", X[:, 8:], y, ["a", "b", "c"], attrs={"backbone": "other"})
    code, out, err = run_main(classify.main, ["--features", str(a), str(b), "--out", str(tmp_path / "r"), "--json",
                                              "--n-jobs", "1",
                          "-q"])
    assert code == 0, err
    result = last_json(out)
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


def test_bad_inputs_exit_2_and_write_nothing(cache, tmp_path, capsys, run_main):
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
        code, out, err = run_main(classify.main, argv + ["--out", str(tmp_path / "runs"), "-q"])
        assert code == 2 and needle in err, (argv, err)
        assert _nothing_written(tmp_path), argv


def test_binary_cache_reports_roc_auc(tmp_path, capsys, run_main):
    X, y = blobs(classes=2)
    path = write_cache(tmp_path / "b.h5", X, y, ["cat", "dog"])
    code, out, _ = run_main(classify.main, ["--features", str(path), "--model", "linear_svm", "--out",
                                            str(tmp_path / "r"), "--json",
                        "--n-jobs", "1", "-q"])
    result = last_json(out)
    assert code == 0 and result["roc_auc"] > 0.95


def _edit_labels_out_of_range(f):
    f["labels"][0] = 7


def _edit_nan_embedding(f):
    f["embeddings"][3, 2] = np.nan


def _edit_inf_embedding(f):
    f["embeddings"][1, 0] = np.inf


def _edit_row_counts(f):
    f["labels"].resize((len(f["labels"]) - 1,))


def _edit_shape(f):
    del f["embeddings"]
    f.create_dataset("embeddings", data=np.zeros((180,), np.float32))


def _edit_class_names(f):
    del f["class_names"]
    f.create_dataset("class_names", data=["a", "b"], dtype=h5py.string_dtype())


def _edit_missing_attribute(f):
    del f.attrs["n_images"]


def _edit_split_codes(f):
    f["splits"][5] = 9


@pytest.mark.parametrize("edit,needle", [
    (_edit_labels_out_of_range, "labels outside 0..2"),
    (_edit_nan_embedding, "1 rows hold NaN or infinite embeddings"),
    (_edit_inf_embedding, "1 rows hold NaN or infinite embeddings"),
    (_edit_row_counts, "179 labels for 180 embedding rows"),
    (_edit_shape, "embeddings have shape (180,)"),
    (_edit_class_names, "class names ['a', 'b'] differ"),
    (_edit_missing_attribute, "lacks the attribute(s) n_images"),
    (_edit_split_codes, "split codes outside 0..2"),
])
def test_a_damaged_or_edited_cache_is_refused_in_one_line(edit, needle, tmp_path, capsys, run_main):
    X, y = blobs()
    path = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    with h5py.File(path, "r+") as f:
        edit(f)
    code, out, err = run_main(classify.main, ["--features", str(path), "--out", str(tmp_path / "runs"), "-q",
                                              "--n-jobs", "1"])
    assert code == 2 and needle in err and "--force" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv,needle", [
    (["--seed", "-1"], "--seed -1: give a whole number from 0 to 4294967295"),
    (["--seed", "100000000000000000000000"], "--seed 100000000000000000000000"),
    (["--C", "nan"], "--C nan: give a finite number above zero"),
    (["--C", "inf"], "--C inf"),
    (["--model", "svm", "--gamma", "-1"], "--gamma -1"),
    (["--model", "svm", "--gamma", "nan"], "--gamma nan"),
    (["--model", "knn", "--k", "1000000"], "--k 1000000: the training and validation splits hold only"),
    (["--n-jobs", "0"], "--n-jobs 0"),
    (["--cv", "1"], "--cv 1"),
])
def test_flags_that_gave_tracebacks_are_refused_before_the_fit(argv, needle, tmp_path, capsys, monkeypatch, run_main):
    X, y = blobs()
    path = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    code, out, err = run_main(classify.main, ["--features", str(path), "--out", str(tmp_path / "runs"), "-q", *argv])
    assert code == 2 and needle in err and "Traceback" not in err, err


def _no_fit(*args, **kwargs):
    raise AssertionError("the head was fitted before the output folder was checked")


def test_an_output_folder_that_is_a_file_is_refused_before_the_fit(tmp_path, capsys, monkeypatch, run_main):
    X, y = blobs()
    path = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    (tmp_path / "taken").write_text("a file")
    monkeypatch.setattr(heads, "fit_head", _no_fit)
    code, out, err = run_main(classify.main, ["--features", str(path), "--out", str(tmp_path / "taken"), "-q"])
    assert code == 2 and "--out" in err and "is a file" in err


@pytest.mark.parametrize("options,needle", [("ro,size=1m", "cannot write there"),
                                            ("size=64k", "no space left on the device")])
def test_a_read_only_or_full_output_device_is_found_before_the_fit(options, needle, tmp_path, capsys, monkeypatch,
                                                                   run_main):
    X, y = blobs()
    path = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    with tmpfs(tmp_path / "disk", options) as mount:
        if "ro" not in options.split(","):
            fill(mount)
        monkeypatch.setattr(heads, "fit_head", _no_fit)
        code, out, err = run_main(classify.main, ["--features", str(path), "--out", str(mount / "runs"), "-q"])
        assert code == 2 and needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("alpha", ["1e300", "1e-300"])
def test_sgd_alpha_far_from_its_grid_is_refused(alpha, tmp_path, capsys):
    X, y = blobs()
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    assert classify.main(["--features", str(cache), "--model", "sgd", "--alpha", alpha, "--out",
                          str(tmp_path / "r")]) == 2
    assert "give a number from 1e-12 to 1000" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["svm", "linear_svm"])
def test_calibrated_heads_with_one_image_of_a_class_say_so(model, tmp_path, capsys):
    X, y = blobs(n_per_class=6)
    splits = np.full(len(y), 2, np.uint8)
    splits[[0, 6, 12]] = 0  # one training image per class
    splits[[1, 7, 13]] = 1
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"], splits=splits)
    assert classify.main(["--features", str(cache), "--model", model, "--out", str(tmp_path / "r"),
                          "--n-jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "calibrated by cross-validation" in err and "Traceback" not in err
