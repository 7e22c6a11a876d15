"""Reliability, round three: what a hostile user broke in exports, merges, exported models, files that change
under the reader and the Ray engine; each test failed on the code before its fix."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import blobs, last_json, make_image_folder, tmpfs, write_cache
from features import cache as store
from features.cli import classify, ensemble, export, extract, finetune, predict, report
from features.data import load_folder
from features.records import runs

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--backbone", "efficientnet_lite0", "--weights", "none", "--image-size", "32", "-q"]


# --- 1. export.py --force replaces only an export it wrote ---------------------------------------------------

@pytest.fixture(scope="module")
def onnx_export(head_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model"
    assert export.main([str(head_runs.runs["logreg"]), "--format", "onnx", "--out", str(out), "-q"]) == 0
    return out


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


# --- 4, 9. an export's record is checked, and checked against its model ---------------------------------------

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


# --- 2, 8. a merge checks what it joins; the checksum covers every row dataset --------------------------------

def _shards(photos, out, seed="0", weights="none"):
    for i in range(2):
        assert extract.main(["--data-dir", str(photos), "--out", str(out), "--shard", f"{i}/2", "--seed", seed,
                             *FAST, "--weights", weights]) == 0
    return sorted(out.glob("**/*.shard*of2.h5"))


def test_a_merge_refuses_a_shard_that_fails_its_checksum(image_folder, tmp_path, capsys):
    shards = _shards(image_folder, tmp_path / "emb")
    with h5py.File(shards[1], "r+") as f:
        f["embeddings"][0] = f["embeddings"][0] + 1.0
    assert extract.main(["--merge", *map(str, shards)]) == 2
    err = capsys.readouterr().err
    assert shards[1].name in err and "do not match their checksum" in err
    assert not store.merged_path(shards[0]).exists()


def test_a_shard_swapped_for_another_seeds_is_found_by_the_rows_checksum(image_folder, tmp_path, capsys):
    seed0 = _shards(image_folder, tmp_path / "a", weights="imagenet")  # the embeddings depend on the images alone
    seed1 = _shards(image_folder, tmp_path / "b", seed="1", weights="imagenet")
    assert extract.main(["--merge", *map(str, seed0)]) == 0
    merged = store.merged_path(seed0[0])
    with h5py.File(seed1[1], "r") as other, h5py.File(seed0[1], "r") as mine:
        assert np.array_equal(other["embeddings"][:], mine["embeddings"][:])  # the same images, other splits
        assert not np.array_equal(other["splits"][:], mine["splits"][:])
    shutil.copyfile(seed1[1], seed0[1])  # same size, same embeddings: only the splits differ
    capsys.readouterr()
    assert classify.main(["--features", str(merged), "--out", str(tmp_path / "runs"), "-q", "--n-jobs", "1"]) == 2
    assert "labels, ids, listing positions or splits do not match their checksum" in capsys.readouterr().err


def test_a_cache_without_the_rows_checksum_still_reads(tmp_path):
    X, y = blobs()
    path = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    with h5py.File(path, "r+") as f:
        del f.attrs["rows_sha256"]  # a cache written before it was recorded
    assert len(store.read_cache(path).labels) == len(y)


def test_merge_onto_a_folder_is_refused(image_folder, tmp_path, capsys):
    shards = _shards(image_folder, tmp_path / "emb")
    store.merged_path(shards[0]).mkdir()
    assert extract.main(["--merge", *map(str, shards)]) == 2
    assert "taken by a folder" in capsys.readouterr().err


# --- 3. an animation's frames count against the pixel limit ---------------------------------------------------

def _gif(path: Path, width: int, height: int, frames: int) -> Path:
    """A GIF whose logical screen is width x height and whose every frame changes one pixel: a few bytes a
    frame in the file; every frame decoded to the whole screen by the decoder."""
    import struct

    out = [b"GIF89a", struct.pack("<HHBBB", width, height, 0xF0, 0, 0), b"\x00\x00\x00\xff\xff\xff",
           b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"]
    for n in range(frames):
        out += [b"!\xf9\x04\x04\x00\x00\x00\x00",  # graphic control: do not dispose
                b"," + struct.pack("<HHHHB", n % width, 0, 1, 1, 0),  # a 1x1 image
                b"\x02\x02\x4c\x01\x00"]  # LZW, minimum code size 2: one pixel of colour 1
    path.write_bytes(b"".join(out) + b";")
    return path


def test_an_animated_gifs_frames_count_against_the_pixel_limit(tmp_path, capsys):
    from PIL import Image

    photos = make_image_folder(tmp_path / "pets", per_class=4)
    gif = _gif(photos / "cat" / "bomb.gif", 100, 100, 200)  # 10,000 pixels a frame, 2,000,000 decoded
    with Image.open(gif) as im:
        assert im.n_frames == 200
    assert extract.main(["--data-dir", str(photos), "--out", str(tmp_path / "emb"), "--json", "--max-pixels",
                         "1000000", *FAST]) == 0
    skipped = last_json(capsys.readouterr().out)["skipped_files"]
    assert [s["kind"] for s in skipped] == ["over the pixel limit"] and "x 200 frames" in skipped[0]["reason"]


def test_a_gif_bomb_is_refused_in_bounded_memory(tmp_path):
    """600 frames of 2000x2000 in 9 KB decoded to 7 GB (the whole dataset's extraction took 5 GB for such a
    file): now refused by its header. Run under a 3 GB cap, so that a regression fails instead of swapping."""
    photos = make_image_folder(tmp_path / "pets", per_class=3)
    _gif(photos / "cat" / "bomb.gif", 2000, 2000, 600)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30)); "
            "import extract; sys.exit(extract.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "--data-dir", str(photos), "--out", str(tmp_path / "e"),
                           "--json", *FAST], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    skipped = last_json(done.stdout)["skipped_files"]
    assert [(s["id"], s["kind"]) for s in skipped] == [("cat/bomb.gif", "over the pixel limit")]
    assert "2000x2000 x 600 frames" in skipped[0]["reason"]


# --- 5. a file swapped for a special file after the header pass is not read -----------------------------------

@pytest.mark.parametrize("special", ["zero", "fifo"])
def test_a_file_swapped_for_a_special_one_after_its_header_was_read_is_skipped(special, tmp_path):
    from features.data import decoded_images, headers_for, why_skipped

    source = load_folder(make_image_folder(tmp_path / "pets", per_class=3))
    headers = headers_for(source, 32)  # the header pass sees a regular file ...
    victim = Path(source.paths()[1])
    victim.unlink()
    if special == "zero":  # ... then it becomes a link to /dev/zero, or a FIFO nobody writes to
        victim.symlink_to("/dev/zero")
    else:
        os.mkfifo(victim)
    rows = [int(i) for i, _ in decoded_images(source, 32, headers=headers)]
    assert 1 not in rows and len(rows) == len(source) - 1
    assert why_skipped(source, 1).kind == "not a regular file"


# --- 6. something other than Ray at --ray-address -------------------------------------------------------------

def test_a_web_server_at_the_ray_address_fails_within_seconds(tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        photos = make_image_folder(tmp_path / "pets", per_class=2)
        import time

        time.sleep(1)
        done = subprocess.run([sys.executable, "extract.py", "--engine", "ray", "--ray-address",
                               f"127.0.0.1:{port}", "--data-dir", str(photos), "--out", str(tmp_path / "e"), *FAST],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
    assert done.returncode == 2 and "no Ray cluster answers there" in done.stderr, done.stderr


def test_a_ray_address_without_the_ray_engine_is_refused(image_folder, tmp_path, capsys):
    assert extract.main(["--data-dir", str(image_folder), "--out", str(tmp_path), "--ray-address", "auto",
                         *FAST]) == 2
    assert "--ray-address auto applies to --engine ray" in capsys.readouterr().err


# --- 7. a dangling or looping link never blocks a dataset -----------------------------------------------------

def test_a_dangling_or_looping_link_is_left_out_not_fatal(tmp_path, capsys):
    photos = make_image_folder(tmp_path / "pets", per_class=4)
    (photos / "cat" / "gone.jpg").symlink_to("/nonexistent/photo.jpg")
    (photos / "dog" / "loop.jpg").symlink_to(photos / "dog" / "loop.jpg")
    source = load_folder(photos)
    assert len(source) == 8 and source.ignored["cannot be read (a dangling or looping link, or no permission)"] == 2
    assert extract.main(["--data-dir", str(photos), "--out", str(tmp_path / "e"), "--json", *FAST]) == 0
    assert last_json(capsys.readouterr().out)["images"] == 8


# --- the tracebacks and silent acceptances ----------------------------------------------------------------------

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


def test_a_huge_finite_embedding_is_refused(tmp_path, capsys):
    X, y = blobs()
    X[3] = 3e38
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    assert classify.main(["--features", str(cache), "--out", str(tmp_path / "r")]) == 2
    assert "1 rows hold values beyond ±100000" in capsys.readouterr().err


def test_an_export_onto_a_read_only_folder_says_so_before_the_work(head_runs, tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        assert export.main([str(head_runs.runs["logreg"]), "--format", "onnx", "--out", str(mount / "x")]) == 2
    assert "--out" in capsys.readouterr().err


def test_the_same_run_twice_is_not_an_ensemble(head_runs, capsys):
    run = str(head_runs.runs["logreg"])
    assert ensemble.main([run, run + "/"]) == 2
    assert "at least two different run folders" in capsys.readouterr().err


def test_predict_refuses_tta_on_a_head_run(head_runs, capsys):
    photo = next(head_runs.photos.glob("cat/*.jpg"))
    assert predict.main([str(head_runs.runs["logreg"]), str(photo), "--tta", "flip"]) == 2
    assert "--tta applies to fine-tuned runs" in capsys.readouterr().err


def test_augment_and_no_augment_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        finetune.main(["--augment", "strong", "--no-augment", "--data-dir", str(tmp_path)])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_results_row_out_of_range_or_a_dataset_named_like_a_path_still_reports(tmp_path, caplog):
    out_dir = tmp_path / "runs"
    base = {"backbone": "toy", "image_size": 32, "method": "frozen-features", "head": "logreg",
            "precision_macro": 0.9, "recall_macro": 0.9, "f1_macro": 0.9, "total_seconds": 1.0, "n_test": 4}
    runs.append_result(out_dir, {**base, "dataset": "pets", "accuracy": 1e308})
    runs.append_result(out_dir, {**base, "dataset": "../../evil", "accuracy": 0.9, "val_accuracy": 1e308,
                                 "seconds_per_epoch": "fast", "per_class": {"a": {"precision": 1e308}}})
    plots = tmp_path / "plots"
    assert report.main(["--results", str(out_dir), "--out", str(tmp_path / "R.md"), "--plots-dir", str(plots),
                        "--map", "none"]) == 0
    assert "lacks accuracy" in caplog.text and "val_accuracy 1e+308 is out of range" in caplog.text
    assert all(p.parent == plots for p in plots.rglob("*")) and not (tmp_path / "evil").exists()


def test_a_head_rows_features_are_found_from_any_folder(tmp_path, capsys, monkeypatch):
    X, y = blobs()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    write_cache(Path("c.h5"), X, y, ["a", "b", "c"])
    assert classify.main(["--features", "c.h5", "--out", "runs", "--json", "-q", "--n-jobs", "1"]) == 0
    assert last_json(capsys.readouterr().out)["features"] == [str(tmp_path / "work" / "c.h5")]
    monkeypatch.chdir(tmp_path)
    assert report.main(["--results", "work/runs", "--out", "R.md", "--plots-dir", "p", "--map", "pca"]) == 0
    assert (tmp_path / "p" / "embedding_map_synthetic.png").is_file()


def test_training_logs_on_a_full_or_read_only_disk_end_in_one_line(tmp_path, capsys, monkeypatch):
    import keras
    import tensorflow as tf

    photos = make_image_folder(tmp_path / "pets", per_class=6)
    for error, needle in ((tf.errors.ResourceExhaustedError(None, None, "events file: No space left on device"),
                           "no space left on the device"),
                          (tf.errors.PermissionDeniedError(None, None, "Read-only file system"),
                           "cannot write the run's checkpoint or training logs")):
        class Failing(keras.callbacks.Callback):
            def on_train_begin(self, logs=None, error=error):
                raise error

        monkeypatch.setattr(keras.callbacks, "TensorBoard", lambda *a, **k: Failing())
        code = finetune.main(["--data-dir", str(photos), "--out", str(tmp_path / "runs"), "--image-size", "32",
                              "--epochs", "1", "--head-epochs", "1", "--batch-size", "4", "-q"])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err, err
    assert not list((tmp_path / "runs").iterdir())  # no run folder, no partial one


def test_a_read_only_home_is_named_for_a_local_ray(image_folder, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    with tmpfs(tmp_path / "home", "ro,size=1m") as home:
        monkeypatch.setenv("HOME", str(home))
        from features.extraction import ray_cluster

        with pytest.raises(Exception, match="HOME .* is not writable"):
            ray_cluster._init(__import__("ray"), None, str(tmp_path / "ray"))
