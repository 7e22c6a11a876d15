"""finetune.py on tiny folders: outputs, what trains and what does not, the shared split."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from features import cache as store
from features.cli import extract, finetune
from features.data import load_folder
from features.records import runs
from features.train import loop
from features.train import model as training
from features.train.config import TrainConfig
from helpers import last_json, make_image_folder

TINY = ["--image-size", "32", "--batch-size", "4", "--epochs", "1", "--head-epochs", "1", "-q"]




@pytest.mark.slow
def test_scratch_epoch_writes_every_output(pets, tmp_path, capsys, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--backbone", "mobilenet", "--weights", "none",
                          "--out", str(tmp_path), "--json", *TINY])
    assert code == 0, err
    result = last_json(out)
    assert result["method"] == "scratch" and result["epochs_run"] == 1 and result["unfrozen_layers"] > 80
    folder = tmp_path / result["run_dir"].split("/")[-1]
    wrong = ["top_losses.png"] if result["accuracy"] < 1 else []  # drawn where a test photo is wrong
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "config.json", "confusion.png", "curves.png", "history.csv", "metrics.json", "model.keras",
        "predictions.csv", "probabilities.npz", "report.txt", "tensorboard", *wrong])
    with open(folder / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [h["phase"] for h in history] == ["scratch"] and float(history[0]["seconds"]) > 0
    assert set(history[0]) >= {"epoch", "seconds", "loss", "accuracy", "val_loss", "val_accuracy"}
    rows = runs.read_results(tmp_path)
    assert rows[-1]["method"] == "scratch" and rows[-1]["seconds_per_epoch"] > 0
    model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    assert model.output.shape[-1] == 1  # two classes: one sigmoid neuron by default


def _network_weights(network):
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in training.base_layers(network)}


@pytest.mark.slow
def test_frozen_layers_stay_unfrozen_layers_move_batchnorm_statistics_stay(pets, tmp_path):
    source = load_folder(pets)
    config = TrainConfig(image_size=32, unfreeze="30", epochs=2, head_epochs=0, lr=1e-2, augment="none",
                                  patience=5)
    from features.data import labelled_batches

    model, network = training.build_model(config, config.backbone, 2)
    train_idx, val_idx = np.flatnonzero(source.splits == 0), np.flatnonzero(source.splits == 1)
    before = _network_weights(network)
    loop.train(model, network, config,
               labelled_batches(source, train_idx, image_size=32, batch_size=4, sigmoid=True, shuffle=True),
               val_ds=labelled_batches(source, val_idx, image_size=32, batch_size=4, sigmoid=True),
               checkpoint_path=tmp_path / "best.weights.h5", verbose=0)
    after = _network_weights(network)
    layers = training.base_layers(network)
    last = {layer.name for layer in layers[-30:]}
    moved = [n for n in before if any(not np.array_equal(a, b) for a, b in zip(before[n], after[n]))]
    assert moved and set(moved) <= last
    assert all(not isinstance(network.get_layer(n), keras.layers.BatchNormalization) for n in moved)
    trainable_with_weights = {layer.name for layer in layers[-30:] if layer.trainable and layer.weights}
    assert trainable_with_weights <= set(moved) | {"head_conv"} and "head_conv" in moved


@pytest.mark.slow
@pytest.mark.parametrize("output,units", [("sigmoid", 1), ("softmax", 2)])
def test_binary_heads_both_score(output, units, pets, tmp_path, capsys, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--binary-output", output, "--unfreeze", "5",
                          "--out", str(tmp_path), "--json", *TINY, "--head-epochs", "0"])
    assert code == 0, err
    result = last_json(out)
    assert 0 <= result["accuracy"] <= 1 and result["roc_auc"] is not None
    folder = tmp_path / result["run_dir"].split("/")[-1]
    model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    assert model.output.shape[-1] == units
    with open(folder / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(abs(float(r["p_cat"]) + float(r["p_dog"]) - 1) < 1e-5 for r in rows)


@pytest.mark.slow
def test_the_test_split_is_the_extract_split(pets, tmp_path, capsys, run_main):
    (pets / "dog" / "bad.jpg").write_text("not an image")
    try:
        assert extract.main(["--data-dir", str(pets), "--out", str(tmp_path / "emb"), "--json", "--weights",
                             "none", "--image-size", "32", "-q"]) == 0
        cache = store.read_cache(last_json(capsys.readouterr().out)["cache"])
        code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--unfreeze", "0", "--out",
                                                  str(tmp_path / "r"), "--json",
                              *TINY])
        assert code == 0, err
        folder = tmp_path / "r" / last_json(out)["run_dir"].split("/")[-1]
        with open(folder / "predictions.csv") as f:
            tested = sorted(r["id"] for r in csv.DictReader(f))
        assert tested == sorted(cache.ids[cache.splits == 2].tolist()) and tested
        assert last_json(out)["method"] == "frozen-in-graph" and last_json(out)["unfrozen_layers"] == 0
    finally:
        (pets / "dog" / "bad.jpg").unlink()


@pytest.mark.slow
def test_mixed_precision_runs_and_keeps_float32_outputs(pets, tmp_path, capsys, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--unfreeze", "0", "--precision", "mixed",
                          "--out", str(tmp_path), "--json", *TINY])
    assert code == 0, err
    from features.device import visible_gpus

    assert last_json(out)["precision"] == ("mixed_float16" if visible_gpus() else "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for whatever runs next


def test_one_precision_vocabulary_with_extract_and_the_former_name_still_taken(monkeypatch):
    """fine-tuning's precision is named as extract.py's (fp32, bf16), plus fp16 and mixed; float32 still works."""
    from features.errors import UsageError
    from features.train import run
    from features.train.config import check_settings

    assert check_settings(TrainConfig(precision="float32")).precision == "fp32"
    assert finetune.build_parser().parse_args(["--precision", "float32"]).precision == "float32"  # still a flag
    policies = {p: run._precision_policy(check_settings(TrainConfig(precision=p)).precision)
                for p in ("fp32", "float32", "bf16", "fp16")}
    assert policies == {"fp32": "float32", "float32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
    monkeypatch.setattr("features.device.visible_gpus", lambda: [])
    assert run._precision_policy("mixed") == "mixed_bfloat16"
    monkeypatch.setattr("features.device.visible_gpus", lambda: ["GPU:0"])
    assert run._precision_policy("mixed") == "mixed_float16"
    with pytest.raises(UsageError, match="precision half: choose fp32, bf16, fp16 or mixed"):
        check_settings(TrainConfig(precision="half"))


@pytest.mark.parametrize("argv,needle", [
    (["--backbone", "vgg20"], "unknown backbone"),
    (["--unfreeze", "-1"], "--unfreeze -1"),
    (["--unfreeze", "9999"], "has only"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "0"], "--lr"),
])
def test_bad_flags_exit_2_and_write_nothing(argv, needle, pets, tmp_path, capsys, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--out", str(tmp_path / "r"), *TINY, *argv])
    assert code == 2 and needle in err, err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_bad_datasets_exit_2(tmp_path, capsys, run_main):
    make_image_folder(tmp_path / "one", classes=("solo",))
    code, _, err = run_main(finetune.main, ["--data-dir", str(tmp_path / "one"), *TINY])
    assert code == 2 and "at least two" in err
    three = make_image_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=8)
    code, _, err = run_main(finetune.main, ["--data-dir", str(three), "--binary-output", "sigmoid", *TINY])
    assert code == 2 and "--binary-output sigmoid applies to two classes" in err


def test_api_defaults_fit_any_class_count(tmp_path):
    from features.train.config import resolve_config

    three = load_folder(make_image_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=8))
    config, backbone = resolve_config(TrainConfig(), three)
    assert backbone.name == "efficientnet_lite0" and backbone.image_size == 224
    assert config.binary_output == "sigmoid" and config.image_size == 224 and config.unfreeze == "20"


@pytest.mark.slow
def test_training_without_any_finite_validation_loss_still_finishes(pets, tmp_path):
    import tensorflow as tf

    from features.data import labelled_batches

    source = load_folder(pets)
    config = TrainConfig(image_size=32, unfreeze="0", epochs=1, augment="none")
    model, network = training.build_model(config, config.backbone, 2)
    train_ds = labelled_batches(source, np.flatnonzero(source.splits == 0), image_size=32, batch_size=4, sigmoid=True)
    nan_val = tf.data.Dataset.from_tensors((tf.zeros((2, 32, 32, 3)), tf.fill((2, 1), float("nan")))).repeat(2)
    result = loop.train(model, network, config, train_ds, val_ds=nan_val, checkpoint_path=tmp_path / "best.weights.h5",
                        verbose=0)
    assert result["best_epoch"] is None and result["seconds_to_best"] is None and len(result["history"]) == 1
    assert all(np.isfinite(np.asarray(w)).all() for w in model.weights)


@pytest.mark.parametrize("backbone,unfreeze", [("efficientnet_lite0", 0), ("efficientnet_lite0", 20),
                                                ("mobilenetv2", 12), ("resnet50", 15)])
def test_frozen_prefix_then_trainable_part_is_the_whole_model(backbone, unfreeze):
    config = TrainConfig(backbone=backbone, weights="none", image_size=32, augment="none")
    model, network = training.build_model(config, config.backbone, 3)
    n = training.unfrozen_count(network, str(unfreeze))
    prefix, trainable, suffix = training.frozen_prefix_models(model, network, n)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    whole = np.asarray(model(images, training=False))
    parts = np.asarray(trainable(prefix(images, training=False), training=False))
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
    assert len(training.base_layers(suffix)) >= n
    if n:  # the unfrozen layers are the suffix's own layer objects: training it trains the model
        assert all(layer in suffix.layers for layer in training.base_layers(network)[-n:])
    assert {layer.name for layer in trainable.layers} >= {"dense", "output"}


@pytest.mark.slow
@pytest.mark.parametrize("memory_limit", [None, 0])  # 0: the activations spill to a file
def test_frozen_activations_in_memory_or_on_disk_are_the_same(pets, tmp_path, memory_limit):
    from features.data import activation_batches
    from features.train.run import frozen_activations

    source = load_folder(pets)
    config = TrainConfig(image_size=32, augment="none")
    model, network = training.build_model(config, config.backbone, 2)
    prefix, _, _ = training.frozen_prefix_models(model, network, 10)
    rows, x = frozen_activations(prefix, source, indices=np.arange(len(source)), image_size=32, batch_size=4,
                                 spill_dir=tmp_path / "spill",
                                 memory_limit=memory_limit)
    assert list(rows) == list(range(len(source))) and x.shape[0] == len(source)
    assert isinstance(x, np.memmap) == (memory_limit == 0)
    assert (tmp_path / "spill").exists() == (memory_limit == 0)
    seen = np.concatenate([y.numpy() for _, y in activation_batches(x, np.arange(len(x)), batch_size=4, shuffle=True)])
    assert sorted(seen) == list(range(len(x)))  # every row once per epoch


@pytest.mark.slow
def test_cache_frozen_flag_trains_and_scores(pets, tmp_path, capsys, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--unfreeze", "10", "--no-augment",
                                              "--cache-frozen",
                          "--out", str(tmp_path), "--json", *TINY])
    assert code == 0, err
    result = last_json(out)
    assert result["cache_frozen"] and result["cache_seconds"] > 0 and result["unfrozen_layers"] == 10
    folder = tmp_path / result["run_dir"].split("/")[-1]
    assert not (folder / "activations").exists()
    model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    assert model.input.shape[1:] == (32, 32, 3)  # the whole model is saved, not the part that trained


@pytest.mark.parametrize("argv,needle", [
    (["--cache-frozen"], "needs --no-augment"),
    (["--cache-frozen", "--no-augment", "--weights", "none"], "pretrained base"),
    (["--cache-frozen", "--no-augment", "--unfreeze", "all"], "nothing can be cached"),
])
def test_cache_frozen_refuses_where_it_cannot_apply(argv, needle, pets, tmp_path, capsys, run_main):
    code, _, err = run_main(finetune.main, ["--data-dir", str(pets), "--out", str(tmp_path / "r"), *TINY, *argv])
    assert code == 2 and needle in err, err


MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from features.cli import finetune
for mode in ("none", "mirrored"):
    assert finetune.main(sys.argv[1:] + ["--distribute", mode]) == 0
"""


def _coloured_folder(root, per_class=24):
    """Two classes told apart by colour: an easy task both runs must learn."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, channel in (("red", 0), ("blue", 2)):
        (root / name).mkdir(parents=True)
        for n in range(per_class):
            pixels = rng.integers(0, 90, (48, 48, 3))
            pixels[..., channel] += 160
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{n}.png")
    return root


@pytest.mark.slow
def test_mirrored_over_two_devices_trains_and_scores_like_one(tmp_path):

    data = _coloured_folder(tmp_path / "colours")
    argv = ["--data-dir", str(data), "--out", str(tmp_path / "runs"), "--image-size", "64", "--unfreeze", "0",
            "--epochs", "3", "--batch-size", "4", "--no-augment", "--json", "-q"]
    done = subprocess.run([sys.executable, "-c", MIRRORED, *argv], capture_output=True, text=True, timeout=600,
                          cwd=Path(finetune.__file__).parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mirrored: 2 replica(s) x batch 4 = global batch 8" in done.stdout
    single, mirrored = runs.read_results(tmp_path / "runs")
    assert (single["replicas"], mirrored["replicas"]) == (1, 2) and mirrored["global_batch_size"] == 8
    assert single["accuracy"] >= 0.9 and mirrored["accuracy"] >= 0.9
    assert abs(single["accuracy"] - mirrored["accuracy"]) <= 0.15


@pytest.mark.slow
def test_tensorboard_logs_both_phases_on_one_axis_with_the_learning_rate(pets, tmp_path, capsys, run_main):
    import tensorflow as tf

    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--backbone", "efficientnet_lite0", "--out",
                                              str(tmp_path),
                          "--json", "--head-epochs", "2", "--epochs", "2", "--head-lr", "0.002", "--lr", "0.0001",
                          *TINY[:4], "-q"])
    assert code == 0, err
    folder = tmp_path / last_json(out)["run_dir"].split("/")[-1]
    steps, rates = {}, {}
    for events in (folder / "tensorboard" / "train").glob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
                if value.tag == "epoch_learning_rate":
                    rates[event.step] = float(tf.make_ndarray(value.tensor))
    assert sorted(steps["epoch_loss"]) == [0, 1, 2, 3]  # head phase, then fine-tuning, one axis
    assert rates == pytest.approx({0: 0.002, 1: 0.002, 2: 0.0001, 3: 0.0001})
    assert list((folder / "tensorboard" / "validation").glob("events.*"))


def test_the_small_cnn_trains_from_scratch_and_refuses_imagenet_weights(pets, tmp_path, capsys, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--backbone", "small_cnn", "--weights", "none",
                          "--out", str(tmp_path), "--json", *TINY])
    assert code == 0, err
    result = last_json(out)
    assert result["method"] == "scratch" and result["backbone"] == "small_cnn" and result["unfrozen_layers"] >= 16
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--backbone", "small_cnn", "--out",
                                              str(tmp_path)])
    assert code == 2 and "--backbone small_cnn is trained from scratch and has no ImageNet weights: give " \
                          "--weights none" in err
    assert extract.main(["--data-dir", str(pets), "--backbone", "small_cnn", "--out", str(tmp_path / "e")]) == 2
    assert "has no ImageNet weights" in capsys.readouterr().err


@pytest.mark.slow
def test_warmup_then_cosine_and_adamw_follow_their_schedule(pets, tmp_path, capsys, run_main):
    import tensorflow as tf

    from features.train.loop import phase_rate

    cosine = [round(phase_rate(1.0, e, epochs=5, schedule="cosine", warmup=1), 4) for e in range(5)]
    assert cosine == [0.5, 1.0, 0.8536, 0.5, 0.1464]
    assert [phase_rate(2.0, e, epochs=3, schedule="constant", warmup=0) for e in range(3)] == [2.0, 2.0, 2.0]
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--backbone", "efficientnet_lite0", "--out",
                                              str(tmp_path),
                          "--json", "--head-epochs", "1", "--epochs", "3", "--lr", "0.001", "--schedule", "cosine",
                          "--warmup-epochs", "1", "--weight-decay", "0.0001", "--patience", "5", *TINY[:4], "-q"])
    assert code == 0, err
    folder = tmp_path / last_json(out)["run_dir"].split("/")[-1]
    rates = {}
    for events in (folder / "tensorboard" / "train").glob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag == "epoch_learning_rate":
                    rates[event.step] = float(tf.make_ndarray(value.tensor))
    # the head phase at --head-lr, then fine-tuning: half the rate (warm-up), the rate, then its cosine decay
    assert rates == pytest.approx({0: 0.001, 1: 0.0005, 2: 0.001, 3: 0.0005}, rel=1e-4)
    assert json.loads((folder / "config.json").read_text())["weight_decay"] == 0.0001


@pytest.mark.parametrize("argv, needle", [
    (["--warmup-epochs", "3", "--epochs", "3"], "--warmup-epochs 3: give a whole number from 0 to --epochs - 1"),
    (["--weight-decay", "-1"], "--weight-decay -1.0: give a number from 0"),
])
def test_bad_recipe_flags_exit_2(argv, needle, pets, tmp_path, capsys, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--out", str(tmp_path), *argv])
    assert code == 2 and needle in err, err


def test_augment_and_no_augment_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        finetune.main(["--augment", "strong", "--no-augment", "--data-dir", str(tmp_path)])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


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


def test_views_need_the_frozen_cache_and_an_augmentation_and_lift_its_no_augmentation_rule():
    from features.errors import UsageError
    from features.train.config import check_settings

    assert check_settings(TrainConfig(cache_frozen=True, augment="standard", views=4)).views == 4
    for config, needle in ((TrainConfig(views=4), "views 4: views are cached activations; give cache_frozen=True"),
                           (TrainConfig(cache_frozen=True, augment="none", views=4), "give augment standard"),
                           (TrainConfig(cache_frozen=True, augment="standard"), "needs augment=none, or views 2"),
                           (TrainConfig(cache_frozen=True, augment="standard", views=0), "views 0"),
                           (TrainConfig(cache_frozen=True, augment="standard", views=33), "from 1 to 32")):
        with pytest.raises(UsageError, match=needle):
            check_settings(config)


def test_each_pass_over_cached_views_takes_one_view_of_every_row_a_different_one_each_pass():
    from features.data import activation_batches

    n, k = 7, 3
    x = (np.arange(n)[:, None] * 10 + np.arange(k)[None, :]).astype(np.float32)[..., None]  # row*10 + view
    ds = activation_batches(x, np.arange(n), batch_size=3, shuffle=True, seed=1, views=True)
    passes = [np.concatenate([xb.numpy()[:, 0] for xb, _ in ds]) for _ in range(k)]
    for got in passes:
        assert sorted((got // 10).astype(int).tolist()) == list(range(n))  # every row once a pass
    views = np.zeros((n, k), dtype=int)
    for got in passes:
        for value in got.astype(int):
            views[value // 10, value % 10] += 1
    assert (views == 1).all()  # over K passes, each row's K views once each


@pytest.mark.slow
def test_cached_views_are_augmented_versions_of_the_same_rows(pets, tmp_path):
    from features.train.run import frozen_activations

    source = load_folder(pets)
    config = TrainConfig(image_size=32, augment="standard", cache_frozen=True, views=3)
    model, network = training.build_model(config, config.backbone, 2)
    prefix, _, _ = training.frozen_prefix_models(model, network, 10)
    plain_rows, plain = frozen_activations(prefix, source, indices=np.arange(len(source)), image_size=32,
                                           batch_size=4, spill_dir=tmp_path / "spill")
    rows, x = frozen_activations(prefix, source, indices=np.arange(len(source)), image_size=32, batch_size=4,
                                 spill_dir=tmp_path / "spill", views=(model.get_layer("augment"), 3))
    assert list(rows) == list(plain_rows) and x.shape == (len(rows), 3, *plain.shape[1:])
    assert not np.allclose(x[:, 0], x[:, 1]) and not np.allclose(x[:, 1], x[:, 2])  # three different draws
    assert not np.allclose(x[:, 0], plain)
    spilled_rows, spilled = frozen_activations(prefix, source, indices=np.arange(len(source)), image_size=32,
                                               batch_size=4, spill_dir=tmp_path / "spill", memory_limit=0,
                                               views=(model.get_layer("augment"), 2))
    assert isinstance(spilled, np.memmap) and spilled.shape[:2] == (len(rows), 2)


@pytest.mark.slow
def test_finetune_on_cached_views_trains_and_saves_the_whole_model(pets, tmp_path, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--unfreeze", "10", "--cache-frozen",
                                              "--views", "3", "--out", str(tmp_path), "--json", *TINY])
    assert code == 0, err
    result = last_json(out)
    assert result["views"] == 3 and result["cache_seconds"] > 0 and result["augment"] == "standard"
    folder = tmp_path / result["run_dir"].split("/")[-1]
    assert not (folder / "activations").exists()
    model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    assert model.get_layer("augment") is not None and model.input.shape[1:] == (32, 32, 3)


def test_the_deadline_stops_an_epoch_at_its_next_batch_and_refuses_one_that_would_end_past_it(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(loop, "time", type("Clock", (), {"monotonic": staticmethod(lambda: now[0])}))
    model = type("Model", (), {"stop_training": False})()
    deadline = loop.Deadline(100.0)
    deadline.set_model(model)
    deadline.on_epoch_begin(0)
    now[0] = 30.0
    deadline.on_train_batch_end(0)
    deadline.on_epoch_end(0)  # 30 s an epoch: one more ends at 60
    assert not model.stop_training and not deadline.too_late()
    deadline.on_epoch_begin(1)
    now[0] = 80.0
    deadline.on_train_batch_end(0)
    assert not model.stop_training
    deadline.on_epoch_end(1)  # 50 s this time: one more would end at 130
    assert model.stop_training and deadline.stopped and deadline.too_late()
    model.stop_training, deadline.stopped = False, False
    deadline.on_epoch_begin(2)
    now[0] = 100.0
    deadline.on_train_batch_end(0)  # past the deadline within an epoch: stopped at this batch
    assert model.stop_training and deadline.stopped


@pytest.mark.slow
def test_a_time_limit_ends_training_at_the_first_batch_past_it_and_still_scores(pets, tmp_path, run_main):
    code, out, err = run_main(finetune.main, ["--data-dir", str(pets), "--unfreeze", "10", "--time-limit", "0.01",
                                              "--out", str(tmp_path), "--json", *TINY, "--head-epochs", "3"])
    assert code == 0, err
    result = last_json(out)
    assert result["stopped_by_time"] and result["time_limit"] == 0.01
    assert result["epochs_run"] == 1 and result["accuracy"] is not None  # the head's first of 3; fine-tuning left out
    history = (tmp_path / result["run_dir"].split("/")[-1] / "history.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in history[1:]] == ["head"]
