"""Every file the toolkit reads back, damaged at will: one line and exit 2, or a correct result; never a
traceback, a hang or unbounded memory.

One property test per format (Hypothesis): a valid file, written by the toolkit, is copied and mutated
(a field dropped or changed, a shape changed, NaN or huge values, the file cut short), then read by the
script that reads it. Each example runs under a memory cap, so a regression that lets a record ask for
gigabytes fails here instead of taking the machine down.
"""

import json
import resource
import shutil
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.cli import classify, ensemble, extract, predict, report
from features.records import runs
from helpers import blobs, last_json, write_cache

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ODD = st.sampled_from([None, "", "x", -1, 0, 1, 2, 10**12, 1e308, -1e308, float("nan"), float("inf"), True, [],
                       [1, 2], {"a": 1}, "../../etc/passwd", "\udcff", 3.5])


@contextmanager
def memory_cap(gigabytes: float = 6):
    """This process's data segment capped for the duration (restored after): an attack that asks for more
    fails as a MemoryError or TensorFlow's ResourceExhausted, which the checks must have prevented."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))
    cap = used + int(gigabytes * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (min(cap, hard) if hard != resource.RLIM_INFINITY else cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def fresh(tmp_path) -> Path:
    """A new folder for one example (Hypothesis runs every example in the one test's tmp_path)."""
    import tempfile

    return Path(tempfile.mkdtemp(dir=tmp_path))


def _one_line_or_success(code, out, err):
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len([line for line in err.splitlines() if line.strip()]) == 1, err


def _run(main, argv, capsys):
    with memory_cap():
        code = main(argv)
    out, err = capsys.readouterr()
    _one_line_or_success(code, out, err)
    return code, out, err


# --- the HDF5 cache, read by classify.py (in memory, and a block at a time) ------------------------------------

CACHE_MUTATIONS = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(["embeddings", "labels", "ids", "index", "splits", "class_names",
                                                "skipped"])),
    st.tuples(st.just("attr"), st.sampled_from(["n_images", "embedding_dim", "class_names", "complete",
                                                "schema_version", "embeddings_sha256", "rows_sha256", "backbone",
                                                "image_size", "dataset"]), ODD),
    st.tuples(st.just("value"), st.sampled_from(["embeddings", "labels", "splits", "index"]),
              st.sampled_from([np.nan, np.inf, 3e38, -1, 255, 10**9])),
    st.tuples(st.just("shape"), st.sampled_from(["embeddings", "labels", "ids", "splits"]), st.integers(0, 200)),
    st.tuples(st.just("truncate"), st.integers(0, 20000)),
)


def _mutate_cache(path: Path, mutation):
    kind = mutation[0]
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:mutation[1] % max(len(data), 1)])
        return
    with h5py.File(path, "r+") as f:
        if kind == "drop":
            del f[mutation[1]]
        elif kind == "attr":
            name, value = mutation[1], mutation[2]
            if value is None:
                del f.attrs[name]
            elif isinstance(value, str):  # as bytes: text that is not UTF-8 reaches the reader as it is
                f.attrs[name] = value.encode("utf-8", "surrogateescape")
            else:
                f.attrs[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
        elif kind == "value":
            data = f[mutation[1]]
            if data.dtype.kind == "f" or np.isfinite(mutation[2]) and float(mutation[2]).is_integer() \
                    and np.can_cast(np.min_scalar_type(int(mutation[2])), data.dtype):
                data[0] = mutation[2]
        elif kind == "shape":
            data = f[mutation[1]]
            if data.maxshape[0] is None:
                data.resize(mutation[2], axis=0)


@pytest.fixture(scope="module")
def valid_cache(tmp_path_factory):
    X, y = blobs(n_per_class=30)
    return write_cache(tmp_path_factory.mktemp("cache") / "c.h5", X, y, ["a", "b", "c"])


@SETTINGS
@given(mutation=CACHE_MUTATIONS, head=st.sampled_from(["logreg", "sgd"]))
def test_a_damaged_cache(mutation, head, valid_cache, tmp_path, capsys):
    tmp_path = fresh(tmp_path)
    path = tmp_path / "c.h5"
    shutil.copyfile(valid_cache, path)
    _mutate_cache(path, mutation)
    code, out, _ = _run(classify.main, ["--features", str(path), "--model", head, "--out", str(tmp_path / "r"),
                                        "--json", "-q", "--n-jobs", "1", "--epochs", "2", "--alpha", "0.001"]
                        if head == "sgd" else ["--features", str(path), "--out", str(tmp_path / "r"), "--json",
                                               "-q", "--n-jobs", "1"], capsys)
    if code == 0:  # what was read is what was written: the mutation changed nothing a head sees
        assert 0.9 <= last_json(out)["accuracy"] <= 1.0


# --- shards, read by extract.py --merge ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def valid_shards(tmp_path_factory):
    from helpers import make_image_folder

    root = tmp_path_factory.mktemp("shards")
    photos = make_image_folder(root / "pets", per_class=6)
    for i in range(2):
        assert extract.main(["--data-dir", str(photos), "--out", str(root / "emb"), "--shard", f"{i}/2",
                             "--weights", "none", "--image-size", "32", "-q"]) == 0
    return sorted((root / "emb").glob("**/*.shard*of2.h5"))


@pytest.mark.slow
@SETTINGS
@given(mutation=CACHE_MUTATIONS.filter(lambda m: m[0] != "truncate" or m[1] > 0), which=st.integers(0, 1))
def test_a_damaged_shard(mutation, which, valid_shards, tmp_path, capsys):
    tmp_path = fresh(tmp_path)
    shards = [shutil.copyfile(p, tmp_path / p.name) for p in valid_shards]
    _mutate_cache(Path(shards[which]), mutation)
    code, _, _ = _run(extract.main, ["--merge", *map(str, shards), "-q"], capsys)
    if code == 0:  # the merged cache reads back whole and checked
        from features.cache import merged_path, read_cache

        assert len(read_cache(merged_path(shards[0])).labels) == 12


# --- a run folder's probabilities.npz and metrics.json, read by ensemble.py ---------------------------------

@pytest.fixture(scope="module")
def valid_runs(tmp_path_factory):
    X, y = blobs(n_per_class=30)
    root = tmp_path_factory.mktemp("runs")
    cache = write_cache(root / "c.h5", X, y, ["a", "b", "c"])
    for model in ("logreg", "knn"):
        assert classify.main(["--features", str(cache), "--model", model, "--out", str(root / "runs"), "-q",
                              "--n-jobs", "1"]) == 0
    return sorted(p for p in (root / "runs").iterdir() if p.is_dir())


PROBABILITY_MUTATIONS = st.tuples(
    st.sampled_from(["class_names", "val_ids", "val_labels", "val_proba", "test_ids", "test_labels", "test_proba"]),
    st.sampled_from(["drop", "nan", "inf", "huge", "negative", "shape", "duplicate", "empty", "strings"]))


def _mutate_probabilities(path: Path, mutation):
    name, how = mutation
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    value = arrays[name]
    if how == "drop":
        del arrays[name]
    elif how in ("nan", "inf", "huge", "negative") and value.dtype.kind in "fiu" and value.size:
        value = value.astype(np.float64)
        value.flat[0] = {"nan": np.nan, "inf": np.inf, "huge": 1e308, "negative": -5}[how]
        arrays[name] = value
    elif how == "shape":
        arrays[name] = value[:-1] if len(value) else value
    elif how == "duplicate" and len(value) > 1:
        value = value.copy()
        value[1] = value[0]
        arrays[name] = value
    elif how == "empty":
        arrays[name] = value[:0]
    elif how == "strings":
        arrays[name] = np.array(["x"] * len(value))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@SETTINGS
@given(mutation=PROBABILITY_MUTATIONS, metrics=st.one_of(st.none(), st.sampled_from(["{", "[]", "null", ""])))
def test_damaged_probabilities_or_metrics(mutation, metrics, valid_runs, tmp_path, capsys):
    tmp_path = fresh(tmp_path)
    dirs = [shutil.copytree(d, tmp_path / d.name) for d in valid_runs]
    _mutate_probabilities(Path(dirs[1]) / "probabilities.npz", mutation)
    if metrics is not None:
        (Path(dirs[0]) / "metrics.json").write_text(metrics)
    code, out, _ = _run(ensemble.main, [*map(str, dirs), "--out", str(tmp_path / "r"), "--json"], capsys)
    if code == 0:
        assert 0 <= last_json(out)["accuracy"] <= 1


@pytest.mark.parametrize("key,value", [("accuracy", 1e308), ("val_accuracy", -0.5), ("train_seconds", float("inf")),
                                       ("f1_macro", True)])
def test_a_metrics_figure_out_of_range_is_refused_by_the_ensemble(key, value, valid_runs, tmp_path, capsys):
    """ensemble.py took metrics.json's accuracy 1e308 as it was: a figure out of its range is a damaged run."""
    dirs = [shutil.copytree(d, tmp_path / d.name) for d in valid_runs]
    record = json.loads((Path(dirs[0]) / "metrics.json").read_text())
    record[key] = value
    (Path(dirs[0]) / "metrics.json").write_text(json.dumps(record))
    code, _, err = _run(ensemble.main, [*map(str, dirs), "--out", str(tmp_path / "r"), "--json"], capsys)
    assert code == 2 and f"holds {key} {value!r}, out of range" in err and len(err.strip().splitlines()) == 1


# --- the results table, read by report.py -------------------------------------------------------------------

ROW_FIELDS = ["dataset", "backbone", "image_size", "method", "head", "accuracy", "precision_macro", "recall_macro",
              "f1_macro", "total_seconds", "seconds_per_epoch", "val_accuracy", "per_class", "run_dir", "n_test",
              "epochs_run", "features", "train_per_class", "unfreeze", "tta"]


@pytest.mark.slow
@SETTINGS
@given(edits=st.lists(st.tuples(st.sampled_from(ROW_FIELDS), ODD), min_size=1, max_size=4),
       raw=st.one_of(st.none(), st.sampled_from(['{"dataset": "pets", "acc', "[1, 2]", "null", "\u00ff\u00fe"])))
def test_damaged_results_rows(edits, raw, tmp_path, capsys):
    tmp_path = fresh(tmp_path)
    row = {"dataset": "pets", "backbone": "toy", "image_size": 32, "method": "frozen-features", "head": "logreg",
           "accuracy": 0.9, "precision_macro": 0.9, "recall_macro": 0.9, "f1_macro": 0.9, "total_seconds": 2.0,
           "n_test": 4, "per_class": {"cat": {"precision": 0.9}, "dog": {"precision": 0.8}}}
    runs.append_result(tmp_path / "runs", row)
    damaged = dict(row)
    for key, value in edits:
        damaged[key] = value
    line = json.dumps(damaged, allow_nan=True) if raw is None else raw
    with open(tmp_path / "runs" / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")
    code, _, _ = _run(report.main, ["--results", str(tmp_path / "runs"), "--out", str(tmp_path / "R.md"),
                                    "--plots-dir", str(tmp_path / "plots"), "--map", "tsne"], capsys)
    assert code == 0  # the good row always reports
    assert all(p.parent == tmp_path / "plots" for p in (tmp_path / "plots").rglob("*"))


# --- a head run folder (head.skops, config.json) and an export (export.json), read by predict.py ----------------

@SETTINGS
@given(edits=st.lists(st.tuples(st.sampled_from(["format", "head", "params", "meta", "pipeline"]), ODD),
                      max_size=2),
       meta=st.lists(st.tuples(st.sampled_from(["class_names", "backbone", "image_size", "weights", "pooling",
                                                "tta", "weights_sha256"]), ODD), max_size=2),
       cut=st.one_of(st.none(), st.integers(0, 4000)))
def test_a_damaged_head_file(edits, meta, cut, head_runs, tmp_path, capsys):
    tmp_path = fresh(tmp_path)
    import skops.io as sio

    from features.heads import load_head

    run = Path(shutil.copytree(head_runs.runs["logreg"], tmp_path / "run"))
    head = load_head(run / "head.skops")
    for key, value in edits:
        head[key] = value
    for key, value in meta:
        if isinstance(head.get("meta"), dict):
            head["meta"][key] = value
    try:
        sio.dump(head, run / "head.skops")
    except Exception:  # noqa: BLE001 - skops cannot write such a value: nothing to read back
        return
    if cut is not None:
        data = (run / "head.skops").read_bytes()
        (run / "head.skops").write_bytes(data[:cut])
    photo = next(head_runs.photos.glob("cat/*.jpg"))
    _run(predict.main, [str(run), str(photo), "-q"], capsys)


EXPORT_FIELDS = ["export_format", "format", "quantization", "model", "sha256", "classes", "image_size", "input",
                 "output", "kind"]


@pytest.mark.slow
@SETTINGS
@given(edits=st.lists(st.tuples(st.sampled_from(EXPORT_FIELDS), st.one_of(ODD, st.integers(-10**6, 10**6))),
                      min_size=1, max_size=3),
       raw=st.one_of(st.none(), st.sampled_from(["", "{", "[]", "null", '"x"'])))
def test_a_damaged_export_record(edits, raw, onnx_export, head_runs, tmp_path, capsys):
    tmp_path = fresh(tmp_path)
    folder = Path(shutil.copytree(onnx_export, tmp_path / "model"))
    record = json.loads((folder / "export.json").read_text())
    for key, value in edits:
        record[key] = value
    (folder / "export.json").write_text(raw if raw is not None else json.dumps(record, allow_nan=True))
    photo = next(head_runs.photos.glob("cat/*.jpg"))
    code, out, _ = _run(predict.main, [str(folder / "model.onnx"), str(photo), "--json", "-q"], capsys)
    if code == 0:  # only edits the model does not depend on (kind, quantization, ...) let it run
        assert len(last_json(out)["predictions"]) == 1
