"""The course's experiments: flip test-time augmentation, the fine-tuning recipe's options,
ensembles of run folders, learning curves, and benchmarks/course.py end to end on a tiny folder."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from features import cache as store
from features.cli import classify, ensemble, extract, finetune, predict
from features.errors import UsageError
from features.models import create_backbone
from features.records import runs
from features.records.runs import RunFiles
from features.reports import learning_curve
from features.reports.ensemble import load_member, select
from features.train.config import TrainConfig, check_settings
from helpers import blobs, last_json, make_image_folder, write_cache

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "32", "--batch-size", "4", "--epochs", "1", "--head-epochs", "1", "-q"]


def test_a_flip_averaged_embedding_is_the_mean_of_the_image_and_its_mirror():
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    plain = create_backbone("efficientnet_lite0", image_size=32)
    flip = create_backbone("efficientnet_lite0", image_size=32, tta="flip")
    expected = (np.asarray(plain(images)) + np.asarray(plain(images[:, :, ::-1]))) / 2
    np.testing.assert_allclose(np.asarray(flip(images)), expected, atol=1e-5)
    assert np.abs(np.asarray(flip(images)) - np.asarray(plain(images))).max() > 1e-3
    with pytest.raises(UsageError, match="tta rotate: choose none or flip"):
        create_backbone("efficientnet_lite0", image_size=32, tta="rotate")


@pytest.mark.slow
def test_extract_tta_flip_is_its_own_cache_and_a_head_on_it_predicts_the_same_way(pets, tmp_path, capsys):
    base = ["--data-dir", str(pets), "--image-size", "32", "--out", str(tmp_path / "emb"), "-q"]
    assert extract.main(base) == 0
    assert extract.main([*base, "--tta", "flip"]) == 0
    capsys.readouterr()
    plain, flip = (tmp_path / "emb" / "pets" / n for n in ("efficientnet_lite0-32.h5",
                                                           "efficientnet_lite0-32-ttaflip.h5"))
    assert store.read_attrs(flip)["tta"] == "flip" and "tta" not in store.read_attrs(plain)
    assert not np.allclose(store.read_cache(plain).embeddings, store.read_cache(flip).embeddings)
    assert extract.main([*base, "--tta", "flip"]) == 0 and "cache hit" in capsys.readouterr().out
    assert classify.main(["--features", str(flip), "--model", "logreg", "--out", str(tmp_path / "runs"), "--json",
                          "-q"]) == 0
    run_dir = Path(last_json(capsys.readouterr().out)["run_dir"])
    assert json.loads((run_dir / "config.json").read_text())["tta"] == "flip"
    # predict.py rebuilds the flip-averaged backbone: its probabilities are the run's own on the test images
    cache = store.read_cache(flip)
    test_ids = [str(i) for i in cache.ids[cache.splits == 2]]
    csv_path = tmp_path / "p.csv"
    assert predict.main([str(run_dir), *[str(pets / i) for i in test_ids], "--csv", str(csv_path), "-q"]) == 0
    got = np.array([[float(v) for v in line.split(",")[2:4]] for line in csv_path.read_text().splitlines()[1:]])
    with np.load(run_dir / RunFiles.PROBABILITIES) as f:
        np.testing.assert_allclose(got, f["test_proba"], atol=1e-4)


def test_recipe_options_are_checked_in_the_callers_terms():
    for bad, match in ((dict(label_smoothing=1.0), "label_smoothing 1.0: give a number from 0"),
                       (dict(label_smoothing=float("nan")), "label_smoothing nan"),
                       (dict(augment="wild"), "augment wild: choose none, standard or strong"),
                       (dict(tta="both"), "tta both: choose none or flip"),
                       (dict(train_per_class=0), "train_per_class 0: must be a whole number, at least 1")):
        with pytest.raises(UsageError, match=match):
            check_settings(TrainConfig(**bad))
    assert finetune.main(["--data-dir", "nowhere", "--label-smoothing", "2"]) == 2


@pytest.mark.slow
def test_finetune_with_the_recipe_trains_on_k_per_class_and_scores_with_flips(pets, tmp_path, capsys):
    code = finetune.main(["--data-dir", str(pets), "--out", str(tmp_path), "--json", "--augment", "strong",
                          "--label-smoothing", "0.1", "--tta", "flip", "--train-per-class", "3",
                          "--binary-output", "softmax", *TINY])
    out, err = capsys.readouterr()
    assert code == 0, err
    row = last_json(out)
    assert row["n_train"] == 6 and row["train_per_class"] == 3 and row["tta"] == "flip"
    assert row["augment"] == "strong" and row["label_smoothing"] == 0.1
    folder = Path(row["run_dir"])
    with np.load(folder / RunFiles.PROBABILITIES) as f:
        assert len(f["test_ids"]) == row["n_test"] and len(f["val_ids"]) == row["n_val"]
        np.testing.assert_allclose(f["test_proba"].sum(axis=1), 1, atol=1e-5)
        first, proba = str(f["test_ids"][0]), f["test_proba"][0]
    # predict.py loads the model (the smoothed loss is not needed) and flips the same way
    assert predict.main([str(folder), str(pets / first), "--tta", "flip", "--csv", str(tmp_path / "p.csv"),
                         "-q"]) == 0
    line = (tmp_path / "p.csv").read_text().splitlines()[1].split(",")
    np.testing.assert_allclose([float(v) for v in line[2:4]], proba, atol=1e-4)


def test_label_smoothing_changes_the_loss_of_a_sigmoid_and_of_a_softmax():
    import keras

    from features.train.model import SmoothedSparseCrossentropy, loss

    y, p = np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    plain = float(keras.losses.SparseCategoricalCrossentropy()(y, p))
    smoothed = SmoothedSparseCrossentropy(0.1)
    onehot = np.array([[0.95, 0.05], [0.05, 0.95]])
    assert float(smoothed(y, p)) == pytest.approx(float(np.mean(-(onehot * np.log(p)).sum(axis=1))), rel=1e-5)
    assert float(smoothed(y, p)) != pytest.approx(plain)
    assert isinstance(loss(True, 0.1), keras.losses.BinaryCrossentropy) and loss(False, 0.0) == \
        "sparse_categorical_crossentropy"
    assert keras.losses.deserialize(keras.losses.serialize(smoothed)).label_smoothing == 0.1


def _two_heads(tmp_path, capsys):
    X, y = blobs(n_per_class=30, spread=4.0)
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    dirs = []
    for model in ("logreg", "knn"):
        assert classify.main(["--features", str(cache), "--model", model, "--out", str(tmp_path / "runs"), "--json",
                              "-q"]) == 0
        dirs.append(last_json(capsys.readouterr().out)["run_dir"])
    return dirs


def test_an_ensemble_averages_its_members_and_records_one_more_method(tmp_path, capsys):
    dirs = _two_heads(tmp_path, capsys)
    assert ensemble.main([*dirs, "--out", str(tmp_path / "runs"), "--json"]) == 0
    out = capsys.readouterr().out
    row = last_json(out)
    members = [load_member(d) for d in dirs]
    for m in members:  # a head's val probabilities come from a copy fitted without val
        assert m.splits["val"][2].shape == (len(m.splits["val"][0]), 3)
    mean = (members[0].splits["test"][2] + members[1].splits["test"][2]) / 2
    labels = members[0].splits["test"][1]
    assert row["method"] == "ensemble" and row["members"] == dirs
    assert row["accuracy"] == pytest.approx(np.mean(mean.argmax(axis=1) == labels))
    assert "ensemble of 2 (all)" in out
    methods = [r["method"] for r in runs.read_results(tmp_path / "runs")]
    assert methods == ["frozen-features", "frozen-features", "ensemble"]
    # one writer for a scored run: an ensemble's folder holds a head's scored files (its model aside)
    head = {p.name for p in Path(dirs[0]).iterdir()} - {"head.skops", "config.json"}
    assert {p.name for p in Path(row["run_dir"]).iterdir()} == head


def _member(name, correct_probability):
    """A run folder's record whose validation probability of the true class is given per image."""
    from features.reports.ensemble import Member

    labels = np.array([0] * 5 + [1] * 5)
    p = np.asarray(correct_probability, np.float64)
    proba = np.where(labels[:, None] == np.arange(2), p[:, None], 1 - p[:, None])
    ids = np.array([f"img{i}" for i in range(10)])
    return Member(run_dir=Path(name), row={"dataset": "pets"}, class_names=["cat", "dog"],
                  splits={"val": (ids, labels, proba), "test": (ids, labels, proba)})


def test_selection_on_val_starts_from_the_best_member_and_stops_when_none_helps(tmp_path, capsys):
    a = _member("a", [0.9] * 8 + [0.2] * 2)  # 8 of 10, confident
    b = _member("b", [0.55] * 8 + [0.1] * 2)  # 8 of 10 too, less sure: the tie goes to a (lower log loss)
    c = _member("c", [0.45] * 4 + [0.6] * 4 + [0.99] * 2)  # 6 of 10 alone, right where a is wrong
    assert select([a, b]) == [0]  # a + b is still 8 of 10: b does not help, the search stops
    assert select([b, a, c]) == [1, 2]  # a, then c (a + c: 10 of 10); then b would lower it
    assert select([b, a, c], max_members=1) == [1]
    dirs = _two_heads(tmp_path, capsys)
    assert ensemble.main([*dirs, "--select", "val", "--max-members", "1", "--out", str(tmp_path / "r2")]) == 0
    assert "ensemble of 1 (val)" in capsys.readouterr().out


def test_weighted_selection_may_choose_a_member_again_and_beats_the_plain_average():
    a = _member("a", [0.7] * 3 + [0.9] * 4 + [0.4] * 3)  # 7 of 10
    c = _member("c", [0.2] * 3 + [0.9] * 4 + [0.9] * 3)  # 7 of 10, wrong where a is right, more surely
    assert select([a, c]) == [0, 1]  # a + c: still 7 of 10 (a lower log loss)
    assert select([a, c], max_members=3, replacement=True) == [0, 1, 0]  # 2a + c: 10 of 10
    chosen = select([a, c], replacement=True)
    assert chosen.count(0) > chosen.count(1) >= 1
    labels = a.splits["val"][1]
    weighted = np.mean([[a, c][i].splits["val"][2] for i in chosen], axis=0)
    assert np.mean(weighted.argmax(axis=1) == labels) == 1.0


def test_an_ensemble_refuses_what_it_cannot_average(tmp_path, capsys):
    dirs = _two_heads(tmp_path, capsys)
    assert ensemble.main([dirs[0], "--out", str(tmp_path / "runs")]) == 2
    assert "at least two different run folders" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert ensemble.main([dirs[0], str(tmp_path / "empty")]) == 2
    assert "not a run folder with probabilities.npz" in capsys.readouterr().err
    X, y = blobs(n_per_class=30, classes=2)
    other = write_cache(tmp_path / "o.h5", X, y, ["x", "y"])
    assert classify.main(["--features", str(other), "--out", str(tmp_path / "o"), "--json", "-q"]) == 0
    other_dir = last_json(capsys.readouterr().out)["run_dir"]
    assert ensemble.main([dirs[0], other_dir]) == 2
    assert "needs runs on the same dataset and classes" in capsys.readouterr().err


def test_predict_averages_run_folders_and_refuses_other_classes(pets, tmp_path, capsys):
    assert extract.main(["--data-dir", str(pets), "--image-size", "32", "--out", str(tmp_path / "emb"), "-q"]) == 0
    cache = tmp_path / "emb" / "pets" / "efficientnet_lite0-32.h5"
    dirs = []
    for model in ("logreg", "knn"):
        assert classify.main(["--features", str(cache), "--model", model, "--out", str(tmp_path / "runs"), "--json",
                              "-q"]) == 0
        dirs.append(last_json(capsys.readouterr().out)["run_dir"])
    photo = str(pets / "cat" / sorted(p.name for p in (pets / "cat").iterdir())[0])
    probs = []
    for args in ([dirs[0]], [dirs[1]], [dirs[0], "--ensemble", dirs[1]]):
        assert predict.main([args[0], photo, "--csv", str(tmp_path / "p.csv"), "-q", *args[1:]]) == 0
        probs.append([float(v) for v in (tmp_path / "p.csv").read_text().splitlines()[1].split(",")[2:4]])
    np.testing.assert_allclose(probs[2], (np.array(probs[0]) + np.array(probs[1])) / 2, atol=1e-5)


def test_the_learning_curve_fits_k_per_class_with_seeds_and_scores_the_whole_test_split(tmp_path):
    X, y = blobs(n_per_class=60, spread=3.0)
    cache = store.read_cache(write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"]))
    rows = learning_curve.frozen_curve(cache, sizes=(5, 10, None), seeds=3)
    n_train = int((cache.splits == 0).sum())
    assert [(r["per_class"], r["seed"]) for r in rows] == [(5, 0), (5, 1), (5, 2), (10, 0), (10, 1), (10, 2),
                                                          (None, 0)]
    assert [r["n_train"] for r in rows] == [15] * 3 + [30] * 3 + [n_train]
    assert len({r["accuracy"] for r in rows[:3]}) > 1  # different subsamples
    assert np.mean([r["accuracy"] for r in rows[-1:]]) >= np.mean([r["accuracy"] for r in rows[:3]]) - 0.05


@pytest.mark.slow
def test_course_benchmark_runs_every_step_on_a_tiny_folder(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("course", ROOT / "benchmarks" / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    make_image_folder(tmp_path / "photos" / "pets", per_class=8)
    monkey = course.FEATURES
    course.FEATURES = (("efficientnet_lite0", "none", ("logreg",)), ("efficientnet_lite0", "flip", ("logreg",)))
    try:
        code = course.main(["--root", str(tmp_path / "photos"), "--datasets", "pets", "--image-size", "32",
                            "--seeds", "2", "--small-cnn-epochs", "2", "--small-cnn-patience", "1",
                            "--finetune-epochs", "1", "--recipe-epochs", "2", "--scratch-epochs", "1",
                            "--few-shot", "2", "--embeddings", str(tmp_path / "emb"), "--out",
                            str(tmp_path / "runs"), "--steps", "features", "curve", "small-cnn", "few-shot",
                            "ensemble"])
    finally:
        course.FEATURES = monkey
    out = capsys.readouterr().out
    assert code == 0, out
    rows = runs.read_results(tmp_path / "runs")
    methods = [r["method"] for r in rows]
    assert methods.count("learning-curve") >= 2 and methods.count("frozen-features") == 2
    assert methods.count("scratch") == 1 + 1  # the small CNN, and again on 2 per class
    assert sum(1 for r in rows if r.get("train_per_class") == 2 and r["method"] != "learning-curve") == 2
    assert methods[-1] == "ensemble" and "chosen on val" in out
    for name, config in course.configs(course.build_parser().parse_args([])).items():  # every step's settings,
        for _, settings in (config if isinstance(config, list) else [(name, config)]):  # as run at full length,
            check_settings(TrainConfig(**settings))  # are settings a user could give finetune.py


def test_monitor_val_accuracy_keeps_the_most_accurate_epoch(pets, tmp_path, capsys):
    with pytest.raises(UsageError, match="monitor val_f1: choose val_loss or val_accuracy"):
        check_settings(TrainConfig(monitor="val_f1"))
    code = finetune.main(["--data-dir", str(pets), "--out", str(tmp_path), "--json", "--backbone", "small_cnn",
                          "--weights", "none", "--monitor", "val_accuracy", "--patience", "2",
                          *[a if a != "1" else "3" for a in TINY]])
    out, err = capsys.readouterr()
    assert code == 0, err
    row = last_json(out)
    with open(Path(row["run_dir"]) / "history.csv") as f:
        history = [line.split(",") for line in f.read().splitlines()[1:]]
    accs = [(float(h[7]), -float(h[6])) for h in history]
    assert row["best_epoch"] == 1 + accs.index(max(accs))


@pytest.mark.slow
def test_the_same_run_twice_is_not_an_ensemble(head_runs, capsys):
    run = str(head_runs.runs["logreg"])
    assert ensemble.main([run, run + "/"]) == 2
    assert "at least two different run folders" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_takes_a_weighted_ensembles_run_folder_and_weighs_its_members(head_runs, tmp_path, capsys):
    from features.serve.predict import ensemble_members, open_predictor

    logreg, svm = str(head_runs.runs["logreg"]), str(head_runs.runs["svm"])
    assert ensemble.main([logreg, svm, "--out", str(tmp_path / "runs"), "--json"]) == 0
    folder = last_json(capsys.readouterr().out)["run_dir"]
    record = json.loads((Path(folder) / "metrics.json").read_text())
    record["members"] = [logreg, svm, logreg]  # as a weighted selection records 2 x logreg + svm
    (Path(folder) / "metrics.json").write_text(json.dumps(record))
    assert ensemble_members(folder) == [logreg, svm, logreg] and ensemble_members(logreg) == []
    photos = sorted(str(p) for p in head_runs.photos.rglob("*.png"))[:4]
    _, found = open_predictor(folder).probabilities(photos)
    each = {d: open_predictor(d).probabilities(photos)[1] for d in (logreg, svm)}
    np.testing.assert_allclose(found, (2 * each[logreg] + each[svm]) / 3, atol=1e-6)
    assert predict.main([folder, *photos, "--csv", str(tmp_path / "p.csv"), "-q"]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 5


def test_the_held_out_accuracy_of_a_selection_is_not_fooled_by_members_that_fit_validation_by_chance():
    from features.reports.ensemble import Member, heldout_scores

    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 30)
    ids = np.array([f"img{i}" for i in range(60)])
    members = []
    for k in range(12):  # no member knows anything: each is right on about half the images
        p = rng.uniform(0.3, 0.7, 60)
        proba = np.stack([p, 1 - p], axis=1)
        members.append(Member(run_dir=Path(f"m{k}"), row={"dataset": "pets"}, class_names=["cat", "dog"],
                              splits={"val": (ids, labels, proba), "test": (ids, labels, proba)}))
    chosen = select(members, replacement=True)
    on_itself = np.mean(np.mean([members[i].splits["val"][2] for i in chosen], axis=0).argmax(axis=1) == labels)
    held_out, loss = heldout_scores(members, replacement=True)
    assert loss > 0.6  # about log 2: no better than a coin
    assert on_itself > 0.65  # the set chosen on these images fits them (0.67 with this seed) ...
    assert held_out < 0.55  # ... and scored on images it was not chosen on, it is a guess (0.43)
