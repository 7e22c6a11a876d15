"""predict.py: the same probabilities as training saw, unreadable files listed, bad run folders refused."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import skops.io as sio

from features import cache as store
from features import heads
from features.cli import finetune, predict
from helpers import last_json


@pytest.fixture(scope="module")
def image_folder_module(head_runs):
    return head_runs.photos


@pytest.fixture(scope="module")
def head_run(head_runs):
    """The logreg run folder and its cache."""
    return head_runs.runs["logreg"], head_runs.cache


def test_head_predictions_equal_the_head_on_cached_embeddings(head_run, image_folder_module, capsys, run_main):
    run_dir, cache_path = head_run
    code, out, err = run_main(predict.main, [str(run_dir), str(image_folder_module), "--json", "-q"])
    assert code == 0, err
    got = {p["path"]: dict(p["top"]) for p in last_json(out)["predictions"]}
    cache = store.read_cache(cache_path)
    expected = heads.load_head(run_dir / "head.skops")["pipeline"].predict_proba(cache.embeddings)
    for i, rel in enumerate(cache.ids):
        probs = got[str(image_folder_module / rel)]
        assert probs["cat"] == pytest.approx(expected[i, 0], abs=1e-4)


def test_unreadable_files_are_listed_not_fatal(head_run, image_folder_module, tmp_path, capsys, run_main):
    run_dir, _ = head_run
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    good = next(image_folder_module.glob("cat/*"))
    out_csv = tmp_path / "p.csv"
    code, out, err = run_main(predict.main, [str(run_dir), str(good), str(bad), "--csv", str(out_csv), "-q"])
    assert code == 0, err
    assert "unreadable" in out and "bad.jpg" in out
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(good), str(bad)]
    assert rows[0]["predicted"] in ("cat", "dog") and rows[1]["error"]


@pytest.mark.slow
def test_finetuned_predictions_equal_its_own_test_predictions(image_folder_module, tmp_path, capsys, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(image_folder_module), "--unfreeze", "0", "--epochs",
                                              "1",
                                         "--image-size", "32", "--batch-size", "4", "--out", str(tmp_path),
                                         "--json", "-q"])
    assert code == 0, err
    run_dir = tmp_path / last_json(out)["run_dir"].split("/")[-1]
    with open(run_dir / "predictions.csv") as f:
        tested = {r["id"]: float(r["p_dog"]) for r in csv.DictReader(f)}
    files = [str(image_folder_module / i) for i in tested]
    code, out, err = run_main(predict.main, [str(run_dir), *files, "--json", "-q"])
    assert code == 0, err
    for item in last_json(out)["predictions"]:
        rel = item["path"][len(str(image_folder_module)) + 1:]
        assert dict(item["top"])["dog"] == pytest.approx(tested[rel], abs=1e-5)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "image_size": 64}))
    code, _, err = run_main(predict.main, [str(run_dir), *files, "-q"])
    assert code == 2 and "config.json says 64" in err


def test_refusals(head_run, image_folder_module, tmp_path, capsys, run_main):
    run_dir, _ = head_run
    code, _, err = run_main(predict.main, [str(tmp_path), str(image_folder_module), "-q"])
    assert code == 2 and "not a run folder" in err
    code, _, err = run_main(predict.main, [str(run_dir), str(tmp_path / "missing.jpg"), "-q"])
    assert code == 2 and "no such file" in err
    # A head whose record disagrees with the model: three class names for a two-class head.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "config.json").write_bytes((run_dir / "config.json").read_bytes())
    head = heads.load_head(run_dir / "head.skops")
    head["meta"]["class_names"] = ["a", "b", "c"]
    sio.dump(head, tampered / "head.skops")
    code, _, err = run_main(predict.main, [str(tampered), str(image_folder_module), "-q"])
    assert code == 2 and "class names" in err
    # A head on embeddings of another width than its backbone gives.
    head["meta"]["class_names"] = ["cat", "dog"]
    head["meta"]["backbone"] = "mobilenet"
    head["meta"]["weights"] = "none"
    sio.dump(head, tampered / "head.skops")
    code, _, err = run_main(predict.main, [str(tampered), str(image_folder_module), "-q"])
    assert code == 2 and "1280-d embeddings" in err and "1024" in err
    np.testing.assert_equal(len(list(tampered.iterdir())), 2)


@pytest.mark.parametrize("swap", [("sgd", "logreg"), ("logreg", "svm")])
def test_a_head_file_from_another_run_is_refused(head_runs, tmp_path, run_main, swap):
    """An sgd run's head.skops replaced by a logreg run's was used under the sgd record: the head file must be the
    head its run's config.json names, holding the classifier that head makes."""
    from features.cli import export

    into, source = swap
    run = shutil.copytree(head_runs.runs[into], tmp_path / "run")
    shutil.copy(head_runs.runs[source] / "head.skops", run / "head.skops")
    code, _, err = run_main(predict.main, [str(run), str(head_runs.photos), "-q"])
    assert code == 2 and f"holds a '{source}' head, but the run's config.json records '{into}'" in err, err
    code, _, err = run_main(export.main, [str(run), "--out", str(tmp_path / "export"), "-q"])
    assert code == 2 and "a head file from another run" in err
    # the name rewritten to match: the classifier inside is still another head's
    head = heads.load_head(run / "head.skops")
    head["head"] = into
    sio.dump(head, run / "head.skops")
    code, _, err = run_main(predict.main, [str(run), str(head_runs.photos), "-q"])
    assert code == 2 and f"a {into} head holds a" in err and "a damaged or edited head file" in err, err


def test_special_files_are_skipped_with_their_reason_never_read(head_run, image_folder_module, tmp_path, capsys,
                                                                run_main):
    """A .jpg linked to /dev/zero read without end, and a FIFO named .jpg hung: both are skipped."""

    run_dir, _ = head_run
    photos = tmp_path / "photos"
    photos.mkdir()
    good = next(image_folder_module.glob("cat/*.jpg"))
    (photos / "good.jpg").write_bytes(good.read_bytes())
    (photos / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(photos / "pipe.jpg")
    code, out, err = run_main(predict.main, [str(run_dir), str(photos), str(photos / "pipe.jpg"), "--json", "-q"])
    assert code == 0, err
    result = last_json(out)
    assert [p["path"] for p in result["predictions"]] == [str(photos / "good.jpg")]
    reasons = {p["path"]: p["reason"] for p in result["unreadable"]}
    assert "a device" in reasons[str(photos / "zero.jpg")] and "FIFO" in reasons[str(photos / "pipe.jpg")]
    assert {p["kind"] for p in result["unreadable"]} == {"not a regular file"}  # the shape a skipped image has


def test_csv_to_a_device_or_a_pipe_writes_through_and_a_folder_is_refused(head_run, image_folder_module, tmp_path,
                                                                          capsys, run_main):
    import stat
    import threading

    run_dir, _ = head_run
    good = str(next(image_folder_module.glob("cat/*.jpg")))
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    link = tmp_path / "out.csv"
    link.symlink_to(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    code, out, err = run_main(predict.main, [str(run_dir), good, "--csv", str(link), "-q"])
    reader.join(60)
    assert code == 0, err
    assert got and got[0].startswith("path,predicted") and good in got[0]
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a link to a FIFO
    regular = tmp_path / "real.csv"
    regular.write_text("old")
    (tmp_path / "to_real.csv").symlink_to(regular)
    assert run_main(predict.main, [str(run_dir), good, "--csv", str(tmp_path / "to_real.csv"), "-q"])[0] == 0
    assert (tmp_path / "to_real.csv").is_symlink() and regular.read_text().startswith("path,predicted")
    code, out, err = run_main(predict.main, [str(run_dir), good, "--csv", str(tmp_path), "-q"])
    assert code == 2 and "--csv" in err and "is a folder" in err and len(err.strip().splitlines()) == 1


def _lambda_model(folder):
    import keras

    image = keras.Input((64, 64, 3))
    x = keras.layers.Lambda(lambda t: t * 2)(image)
    x = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(image, x).save(folder / "model.keras")


def _rewrite_head(key, value):
    def edit(folder):
        path = folder / "head.skops"
        obj = sio.load(path, trusted=sio.get_untrusted_types(file=path))
        if key == "meta":
            obj["meta"] = value
        else:
            obj["meta"][key] = value
        sio.dump(obj, path)
    return edit


@pytest.mark.slow
@pytest.mark.parametrize("kind,edit,needle", [
    ("finetune", _lambda_model, "Lambda layer"),
    ("finetune", lambda d: (d / "config.json").write_text("[1, 2]"), "not a record of a run"),
    ("finetune", lambda d: (d / "model.keras").write_bytes(b"PK\x03\x04 not a zip"), "cannot be loaded safely"),
    ("head", _rewrite_head("meta", "oops"), "no record of its classes"),
    ("head", _rewrite_head("image_size", "x"), "image size and weights"),
])
def test_refused_artifacts_are_refused_in_one_line(kind, edit, needle, head_run, finetuned_run, image_folder_module,
                                                   tmp_path, capsys, run_main):

    folder = tmp_path / "run"
    shutil.copytree(finetuned_run if kind == "finetune" else head_run[0], folder)
    edit(folder)
    code, out, err = run_main(predict.main, [str(folder), str(image_folder_module), "-q"])
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def finetuned_run(tmp_path_factory, image_folder_module):
    out = tmp_path_factory.mktemp("ft")
    assert finetune.main(["--data-dir", str(image_folder_module), "--image-size", "64", "--unfreeze", "0",
                          "--epochs", "1", "--batch-size", "4", "--out", str(out), "-q"]) == 0
    return next(p for p in out.iterdir() if p.is_dir())


def test_predict_refuses_tta_on_a_head_run(head_runs, capsys):
    photo = next(head_runs.photos.glob("cat/*.jpg"))
    assert predict.main([str(head_runs.runs["logreg"]), str(photo), "--tta", "flip"]) == 2
    assert "--tta applies to fine-tuned runs" in capsys.readouterr().err
