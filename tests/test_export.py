"""export.py: heads folded into one graph, every format against the Keras model, predict.py on exports."""

import json
import os
import shutil

import numpy as np
import pytest

from features import cache as store
from features import heads
from features.cli import export, finetune, predict
from features.serve.export import Exportable, linear_probabilities, load_exportable
from features.serve.exported import load_exported
from helpers import blobs, last_json, make_image_folder, tmpfs

onnxruntime = pytest.importorskip("onnxruntime", reason="pip install -r requirements-export.txt")

EXPORTS = [("saved_model", "none"), ("tflite", "none"), ("onnx", "none"), ("tflite", "dynamic"),
           ("tflite", "float16"), ("tflite", "int8")]


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("name", ["logreg", "linear_svm", "sgd"])
def test_a_folded_head_gives_the_heads_probabilities(name, classes):
    X, y = blobs(n_per_class=40, classes=classes, dim=12, spread=2.0)
    pipeline = heads.make_head(name, {}, class_weight=None, seed=0, probability=True).fit(X, y)
    folded = heads.fold_head(pipeline, name)
    expected = pipeline.predict_proba(X)
    np.testing.assert_allclose(folded.predict_proba(X), expected, atol=1e-12)
    np.testing.assert_allclose(linear_probabilities(folded, X.astype(np.float32)).numpy(), expected, atol=1e-5)


def test_heads_without_a_single_graph_are_refused_by_name():
    X, y = blobs(n_per_class=20)
    for name in ("svm", "knn"):
        with pytest.raises(Exception, match="heads that export: logreg, linear_svm, sgd"):
            heads.fold_head(heads.make_head(name).fit(X, y), name)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["logreg", "sgd"])
def test_the_folded_graph_gives_the_heads_probabilities_on_the_cached_embeddings(head, head_runs, tmp_path):

    runs, photos = head_runs.runs, head_runs.photos
    fitted = heads.load_head(runs[head] / "head.skops")
    cache = store.read_cache(fitted["meta"]["features"][0])
    model = load_exportable(runs[head])
    got = linear_probabilities(model.linear, cache.embeddings).numpy()
    assert np.abs(got - fitted["pipeline"].predict_proba(cache.embeddings)).max() <= 1e-5
    assert export.main([str(runs[head]), "--format", "onnx", "--out", str(tmp_path / "onnx"), "-q"]) == 0
    batch = _uint8(photos, model.image_size)
    onnx = load_exported(tmp_path / "onnx" / "model.onnx").run(batch)
    assert np.abs(onnx - model.probabilities(batch).numpy()).max() <= 1e-4


def _uint8(photos, size, n=6):
    from features.serve.export import _uint8_batches
    from features.serve.predict import list_inputs

    return next(_uint8_batches(list_inputs([photos])[:n], size, n))


@pytest.mark.slow
def test_every_format_gives_the_keras_models_probabilities(head_runs, tmp_path, capsys):
    runs, photos = head_runs.runs, head_runs.photos
    model = load_exportable(runs["logreg"])
    batch = _uint8(photos, model.image_size)
    reference = model.probabilities(batch).numpy()
    sizes = {}
    for fmt, quantize in EXPORTS:
        out = tmp_path / f"{fmt}-{quantize}"
        assert export.main([str(runs["logreg"]), "--format", fmt, "--quantize", quantize, "--out", str(out),
                            "--json", "-q"]) == 0
        result = last_json(capsys.readouterr().out)
        sizes[(fmt, quantize)] = result["bytes"]
        record = json.loads((out / "export.json").read_text())
        assert record["classes"] == ["cat", "dog"] and record["image_size"] == 64
        assert record["input"]["dtype"] == "uint8" and record["quantization"] == quantize
        assert (out / "labels.txt").read_text() == "cat\ndog\n"
        got = load_exported(out / record["model"]).run(batch)
        assert got.shape == reference.shape and np.allclose(got.sum(axis=1), 1, atol=0.01), (fmt, quantize)
        if quantize == "none":  # quantized ones are held to accuracy on real photos: benchmarks/export.py
            assert np.abs(got - reference).max() <= 1e-4, fmt
    assert sizes[("tflite", "int8")] < sizes[("tflite", "float16")] < sizes[("tflite", "none")]


@pytest.mark.slow
def test_predict_reads_an_export_and_refuses_a_changed_one(head_runs, tmp_path, capsys):
    runs, photos = head_runs.runs, head_runs.photos
    out = tmp_path / "tfl"
    assert export.main([str(runs["logreg"]), "--format", "tflite", "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert predict.main([str(runs["logreg"]), str(photos), "--csv", str(tmp_path / "keras.csv"), "-q"]) == 0
    assert predict.main([str(out / "model.tflite"), str(photos), "--csv", str(tmp_path / "tfl.csv"), "-q"]) == 0
    keras_rows = (tmp_path / "keras.csv").read_text().splitlines()
    tfl_rows = (tmp_path / "tfl.csv").read_text().splitlines()
    assert len(keras_rows) == len(tfl_rows) == 25 and keras_rows[0] == tfl_rows[0]
    assert [r.split(",")[1] for r in keras_rows] == [r.split(",")[1] for r in tfl_rows]  # the same classes
    capsys.readouterr()
    with open(out / "model.tflite", "ab") as f:
        f.write(b"\0")
    assert predict.main([str(out / "model.tflite"), str(photos)]) == 2
    assert "changed since it was exported" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--format", "onnx", "--quantize", "int8"], "--quantize int8: onnx takes none"),
    (["--format", "saved_model", "--quantize", "float16"], "quantized models are exported as tflite"),
])
def test_bad_settings_exit_2(argv, needle, head_runs, capsys):
    runs = head_runs.runs
    assert export.main([str(runs["logreg"]), *argv]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.slow
def test_refusals_leave_nothing_behind(head_runs, tmp_path, capsys, monkeypatch):
    runs = head_runs.runs
    assert export.main([str(runs["svm"]), "--out", str(tmp_path / "svm")]) == 2
    assert "head svm has no single-graph form to export; heads that export: logreg" in capsys.readouterr().err
    assert export.main([str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    out = tmp_path / "once"
    assert export.main([str(runs["logreg"]), "--format", "onnx", "--out", str(out), "-q"]) == 0
    assert export.main([str(runs["logreg"]), "--format", "onnx", "--out", str(out)]) == 2
    assert "an export is already there (onnx); give --force" in capsys.readouterr().err

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("features.serve.export._onnx", interrupted)
    assert export.main([str(runs["logreg"]), "--format", "onnx", "--out", str(out), "--force"]) != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["once"]  # the old export stays, no partial folder
    assert (out / "model.onnx").is_file()
    capsys.readouterr()
    assert predict.main([str(tmp_path / "nothing.tflite"), str(tmp_path)]) == 2


@pytest.mark.slow
def test_a_finetuned_model_exports_with_two_columns(tmp_path, capsys):
    photos = make_image_folder(tmp_path / "pets", per_class=8)
    assert finetune.main(["--data-dir", str(photos), "--backbone", "mobilenet", "--weights", "none", "--out",
                          str(tmp_path / "runs"), "--image-size", "32", "--batch-size", "4", "--epochs", "1",
                          "-q"]) == 0
    run = next((tmp_path / "runs").glob("*-scratch"))
    model = load_exportable(run)
    assert isinstance(model, Exportable) and model.kind == "finetune"
    batch = _uint8(photos, 32)
    reference = model.probabilities(batch).numpy()
    assert reference.shape == (6, 2) and np.allclose(reference.sum(axis=1), 1)
    assert export.main([str(run), "--format", "tflite", "-q"]) == 0
    got = load_exported(run / "export" / "tflite" / "model.tflite").run(batch)
    assert np.abs(got - reference).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "saved_model", "onnx"])
def test_a_full_disk_ends_in_one_line_and_leaves_nothing(fmt, head_runs, tmp_path, capsys):
    from helpers import tmpfs

    runs = head_runs.runs
    with tmpfs(tmp_path / "disk", "size=4m") as mount:
        (mount / "ballast").write_bytes(b"\0" * 3_000_000)  # about 1 MB free: less than any export
        code = export.main([str(runs["logreg"]), "--format", fmt, "--out", str(mount / "export")])
        err = capsys.readouterr().err
        assert code == 2 and "no space left on the device" in err and "Traceback" not in err, err
        assert sorted(p.name for p in mount.iterdir()) == ["ballast"]


def test_force_never_deletes_what_is_not_an_export(head_runs, tmp_path, capsys):
    run = str(head_runs.runs["logreg"])
    other_runs = tmp_path / "runs_copy"  # a folder of run folders, as the hostile user gave it
    shutil.copytree(head_runs.runs["logreg"].parent, other_runs)
    before = sorted(p.relative_to(other_runs) for p in other_runs.rglob("*"))
    assert export.main([run, "--format", "onnx", "--out", str(other_runs), "--force"]) == 2
    err = capsys.readouterr().err
    assert "holds no export" in err and "give a new or empty folder" in err and "--force" not in err.split(":")[-1]
    assert sorted(p.relative_to(other_runs) for p in other_runs.rglob("*")) == before
    plain = tmp_path / "notes.txt"
    plain.write_text("mine")
    assert export.main([run, "--format", "onnx", "--out", str(plain), "--force"]) == 2
    assert "is a file, not an export folder" in capsys.readouterr().err and plain.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "runs_copy"]  # no .partial, no .old


@pytest.mark.slow
def test_force_replaces_an_export_and_refuses_one_with_other_files(head_runs, onnx_export, tmp_path, capsys):
    run = str(head_runs.runs["logreg"])
    out = tmp_path / "model"
    shutil.copytree(onnx_export, out)
    assert export.main([run, "--format", "onnx", "--out", str(out)]) == 2  # an export: --force replaces it
    assert "an export is already there (onnx); give --force" in capsys.readouterr().err
    (out / "my_notes.txt").write_text("mine")
    assert export.main([run, "--format", "onnx", "--out", str(out), "--force"]) == 2
    assert "holds files an export does not (my_notes.txt)" in capsys.readouterr().err
    assert (out / "my_notes.txt").read_text() == "mine"


def test_a_second_export_into_the_same_folder_is_refused_while_the_first_runs(head_runs, tmp_path, capsys):
    from features.io import file_lock

    out = tmp_path / "model"
    with file_lock(tmp_path / ".model.export.lock"):  # as an export into it holds it while it runs
        assert export.main([str(head_runs.runs["logreg"]), "--format", "onnx", "--out", str(out)]) == 2
    assert f"another export into it is running (pid {os.getpid()})" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("edit,needle", [
    (lambda r: r.update(image_size=20000), "image_size 20000 is not a size from 1 to 1024"),
    (lambda r: r.update(image_size=-5), "image_size -5"),
    (lambda r: r.update(format="pickle"), "format 'pickle' is none of"),
    (lambda r: r.update(model="../../etc/passwd"), "model '../../etc/passwd'"),
    (lambda r: r.update(classes=[]), "classes is not a list"),
    (lambda r: r.update(image_size=32), "the model takes 64x64 images, export.json says 32"),
    (lambda r: r.update(classes=["a", "b", "c"]), "the model gives 2 probabilities, export.json names 3 classes"),
])
def test_an_exports_record_is_checked_before_any_image_is_decoded(edit, needle, onnx_export, head_runs, tmp_path,
                                                                  capsys):
    folder = tmp_path / "model"
    shutil.copytree(onnx_export, folder)
    record = json.loads((folder / "export.json").read_text())
    edit(record)
    (folder / "export.json").write_text(json.dumps(record))
    photo = next(head_runs.photos.glob("cat/*.jpg"))
    code = predict.main([str(folder / "model.onnx"), str(photo), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_an_export_onto_a_read_only_folder_says_so_before_the_work(head_runs, tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        assert export.main([str(head_runs.runs["logreg"]), "--format", "onnx", "--out", str(mount / "x")]) == 2
    assert "--out" in capsys.readouterr().err
