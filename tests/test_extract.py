"""extract.py end to end on tiny folders: rows, labels, skips, cache hits, refusals."""

import json

import numpy as np
import pytest

from features import cache as store
from features.cli import extract
from features.data import load_folder
from features.models import DEFAULT_BATCH_SIZE
from helpers import last_json, make_image_folder, write_image

FAST = ["--backbone", "efficientnet_lite0", "--weights", "none", "--image-size", "32", "-q"]




def test_end_to_end_with_bad_files(image_folder, tmp_path, capsys, run_main):
    (image_folder / "dog" / "broken.jpg").write_text("<html>a web page saved as .jpg</html>")
    (image_folder / "cat" / "empty.jpg").write_bytes(b"")
    out_dir = tmp_path / "emb"
    code, out, err = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(out_dir), "--json", *FAST])
    assert code == 0, err
    result = last_json(out)
    assert result["images"] == 16 and result["skipped"] == 2 and not result["cache_hit"]
    assert {s["id"] for s in result["skipped_files"]} == {"dog/broken.jpg", "cat/empty.jpg"}
    assert "skipped dog/broken.jpg" in out

    cache = store.read_cache(result["cache"], verify=True)
    assert cache.embeddings.shape == (16, 1280)
    # No label shifted past the skipped files: every row's label is its folder's class.
    assert all(cache.class_names[label] == i.split("/")[0] for i, label in zip(cache.ids, cache.labels))
    # The recorded split is the one any later method gets by listing the folder again.
    listing = load_folder(image_folder)
    assert np.array_equal(cache.splits, listing.splits[cache.index])
    assert cache.attrs["backbone"] == "efficientnet_lite0" and cache.attrs["image_size"] == 32
    assert "tensorflow" in json.loads(cache.attrs["versions"])
    assert {s.id for s in cache.skipped} == {"dog/broken.jpg", "cat/empty.jpg"}


def test_each_row_is_its_own_files_embedding(image_folder, tmp_path, capsys, run_main):
    """Row i of the cache is the backbone applied to file ids[i], even around skipped files."""
    import tensorflow as tf

    from features.data import decode_image
    from features.models import create_backbone

    (image_folder / "cat" / "img3b.jpg").write_bytes(b"\xff\xd8\xff truncated")
    code, out, err = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path), "--json",
                          "--image-size", "64", "--batch-size", "5", "-q"])
    assert code == 0, err
    cache = store.read_cache(last_json(out)["cache"])
    assert [s.id for s in cache.skipped] == ["cat/img3b.jpg"]
    model = create_backbone("efficientnet_lite0", weights="imagenet", image_size=64)
    images = tf.stack([decode_image(tf.io.read_file(str(image_folder / i)), 64) for i in cache.ids])
    expected = np.asarray(model(images, training=False))
    np.testing.assert_allclose(cache.embeddings, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(cache.embeddings[0] - cache.embeddings[1]).max() > 1e-2  # rows differ


@pytest.mark.slow
def test_rerun_is_a_cache_hit_and_force_or_a_changed_folder_recompute(image_folder, tmp_path, capsys, run_main):
    args = ["--data-dir", str(image_folder), "--out", str(tmp_path), "--json", *FAST]
    first = last_json(run_main(extract.main, args)[1])
    import os

    os.utime(first["cache"], (0, 0))
    again = last_json(run_main(extract.main, args)[1])
    assert again["cache_hit"] and again["images"] == first["images"]
    assert os.path.getmtime(first["cache"]) > 0  # a hit counts as use: classify.py's default
    assert not last_json(run_main(extract.main, args + ["--force"])[1])["cache_hit"]
    write_image(image_folder / "cat" / "new.jpg", 99)
    changed = last_json(run_main(extract.main, args)[1])
    assert not changed["cache_hit"] and changed["images"] == first["images"] + 1


@pytest.mark.slow
def test_the_default_batch_suits_the_device_and_is_printed_and_recorded(image_folder, tmp_path, capsys,
                                                                       monkeypatch, run_main):
    args = ["--data-dir", str(image_folder), "--json", *FAST]
    code, out, err = run_main(extract.main, args + ["--out", str(tmp_path / "cpu")])
    assert code == 0, err
    assert "batch size 32 (the default on a CPU)" in out and last_json(out)["batch_size"] == 32
    monkeypatch.setattr("features.device.visible_gpus", lambda: 1)  # as TensorFlow reports one GPU
    monkeypatch.setitem(DEFAULT_BATCH_SIZE, "gpu", 12)
    code, out, err = run_main(extract.main, args + ["--out", str(tmp_path / "gpu")])
    assert code == 0, err
    result = last_json(out)
    assert "batch size 12 (the default on a GPU)" in out and result["batch_size"] == 12
    assert store.read_attrs(result["cache"])["batch_size"] == 12
    code, out, err = run_main(extract.main, args + ["--out", str(tmp_path / "given"), "--batch-size", "8"])
    assert "batch size 8, runtime" in out and store.read_attrs(last_json(out)["cache"])["batch_size"] == 8


@pytest.mark.slow
def test_shards_merge_to_the_single_process_cache(image_folder, tmp_path, capsys, run_main):
    import tensorflow as tf

    from features.models import create_backbone

    # Same weights in every worker: save once, load by path.
    weights = tmp_path / "w.weights.h5"
    create_backbone("mobilenet", weights="none", image_size=32).get_layer("mobilenet").save_weights(weights)
    base = ["--data-dir", str(image_folder), "--out", str(tmp_path / "e"), "--json", "--backbone",
            "mobilenet", "--weights", str(weights), "--image-size", "32", "-q"]
    whole_path = last_json(run_main(extract.main, base)[1])["cache"]
    whole = store.read_cache(whole_path)
    shards = [last_json(run_main(extract.main, base + ["--shard", f"{i}/3"])[1])["cache"] for i in range(3)]
    assert len(set(shards)) == 3 and all(".shard" in s for s in shards)
    assert extract.main(["--merge", shards[0], shards[2]]) == 2  # not the whole set: one line, exit 2
    err = capsys.readouterr().err
    assert "missing 1/3" in err and "Traceback" not in err
    merged = last_json(run_main(extract.main, ["--merge", *shards, "--json"])[1])["cache"]
    assert merged == whole_path  # the single-process cache's name, beside the shards
    b = store.read_cache(merged, verify=True)
    assert whole.ids.tolist() == b.ids.tolist() and np.array_equal(whole.splits, b.splits)
    np.testing.assert_allclose(whole.embeddings, b.embeddings, rtol=1e-5, atol=1e-5)
    del tf


@pytest.mark.slow
def test_tfds_end_to_end_with_mock_data(tmp_path, capsys, monkeypatch, run_main):
    import tensorflow_datasets as tfds

    monkeypatch.setattr("features.data.listing._host_reachable", lambda host, timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=20):
        code, out, err = run_main(extract.main, ["--dataset", "tf_flowers", "--out", str(tmp_path), "--json", *FAST])
    assert code == 0, err
    result = last_json(out)
    assert result["images"] == 20 and result["cache"].endswith("tf_flowers/efficientnet_lite0-32-random.h5")
    cache = store.read_cache(result["cache"])
    assert cache.ids[0].startswith("tf_flowers-train") and cache.class_names[0] == "dandelion"


@pytest.mark.parametrize("argv,needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--split", "0.5,0.2,0.2"], "--split"),
    (["--backbone", "resnet51"], "--backbone resnet51: unknown backbone"),
    (["--backbone", "xception", "--image-size", "64"], "at least 71"),
    (["--weights", "/no/such/weights.pth"], "--weights"),
    (["--shard", "3/2"], "--shard"),
    (["--max-per-class", "0"], "--max-per-class"),
])
def test_bad_flags_exit_2_with_a_message(argv, needle, image_folder, tmp_path, capsys, run_main):
    base = ["--data-dir", str(image_folder), "--out", str(tmp_path), "--weights", "none", "-q"]
    code, out, err = run_main(extract.main, base + argv)
    assert code == 2 and needle in err and not list(tmp_path.glob("**/*.h5"))


def test_bad_data_exit_2(tmp_path, capsys, run_main):
    make_image_folder(tmp_path / "one", classes=("solo",))
    code, _, err = run_main(extract.main, ["--data-dir", str(tmp_path / "one"), *FAST])
    assert code == 2 and "at least two" in err
    code, _, err = run_main(extract.main, ["--data-dir", str(tmp_path / "missing"), *FAST])
    assert code == 2 and "no such folder" in err


def test_offline_tfds_and_keras_weights_exit_2(offline, tmp_path, capsys, image_folder, monkeypatch, run_main):
    code, _, err = run_main(extract.main, ["--dataset", "tf_flowers", "--tfds-dir", str(tmp_path), *FAST])
    assert code == 2 and "--data-dir" in err
    import keras.src.utils.file_utils as file_utils

    monkeypatch.setattr(file_utils.config, "keras_home", lambda: str(tmp_path))
    code, _, err = run_main(extract.main, ["--data-dir", str(image_folder), "--backbone", "vgg16", "--out",
                                           str(tmp_path), "-q"])
    assert code == 2 and "--weights PATH" in err and "efficientnet_lite0" in err


def test_list_backbones(capsys, run_main):
    code, out, _ = run_main(extract.main, ["--list-backbones"])
    assert code == 0
    assert "efficientnet_lite0" in out and "nasnetlarge" in out and "pip package" in out
    assert len(out.strip().splitlines()) == 46  # header, 40 Keras applications, 3 lite, small_cnn, hub:PRESET
    assert "small_cnn             128 px    256-d  rescale none: trained from scratch only" in out
    assert "convnexttiny          224 px    768-d  none    Keras download" in out
    assert "hub:PRESET" in out and "DINOv2, DINOv3, ViT, CLIP, SigLIP" in out


def test_the_registry_holds_every_keras_application():
    """Every model keras.applications exports (its capitalised names) is a registry entry."""
    import keras

    from features.models.registry import REGISTRY

    apps = {name.lower() for name in dir(keras.applications) if name[0].isupper()}
    assert len(apps) == 40 and apps <= set(REGISTRY)


@pytest.mark.parametrize("backbone,width", [("efficientnetv2b0", 1280), ("convnexttiny", 768),
                                            ("mobilenetv3small", 576)])
def test_a_newer_keras_application_builds_with_its_documented_width(backbone, width):
    """The newer applications carry their preprocessing inside (include_preprocessing): the registry's is none."""
    from features.models import create_backbone, get_spec

    spec = get_spec(backbone)
    assert spec.width == width and spec.preprocessing == "none"
    model = create_backbone(backbone, weights="none", image_size=64)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    assert np.asarray(model(images, training=False)).shape == (2, width)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "mobilenetv2", "resnet50", "densenet121"])
def test_the_frozen_graph_computes_what_the_keras_model_does(backbone):
    import keras

    from features.models import create_backbone, embedding_function

    keras.utils.set_random_seed(0)
    model = create_backbone(backbone, weights="none", image_size=32)
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    frozen = np.asarray(embedding_function(model, 32)(images))
    plain = np.asarray(model(images, training=False))
    assert frozen.shape == plain.shape == (5, model.output.shape[-1])
    np.testing.assert_allclose(frozen, plain, rtol=1e-4, atol=1e-4 * np.abs(plain).max())
    three = np.asarray(embedding_function(model, 32)(images[:3]))  # any batch length, one trace
    np.testing.assert_allclose(three, frozen[:3], rtol=1e-4, atol=1e-4 * np.abs(plain).max())


@pytest.mark.slow
def test_the_split_travels_with_the_listing_and_keys_the_cache(image_folder, tmp_path, caplog):
    """A listing made with seed 3 is extracted as seed 3 (it used to be recorded as seed 0 unless extract()
    was told again), and a listing whose splits differ from its cache's is recomputed, not a hit."""
    import dataclasses

    import numpy as np

    from features.cache import read_attrs, read_cache
    from features.extraction.run import extract

    options = dict(weights="none", image_size=32, out_dir=tmp_path, progress=False)
    seeded = load_folder(image_folder, seed=3)
    first = extract(seeded, "efficientnet_lite0", **options)
    assert "seed3" in first.path.name and read_attrs(first.path)["seed"] == 3
    plain = load_folder(image_folder)
    assert not np.array_equal(plain.splits, seeded.splits)
    second = extract(plain, "efficientnet_lite0", **options)
    assert not second.cache_hit and second.path != first.path and read_attrs(second.path)["seed"] == 0
    assert extract(plain, "efficientnet_lite0", **options).cache_hit
    swapped = dataclasses.replace(plain, splits=seeded.splits)  # seed 0 on paper, seed 3's splits
    third = extract(swapped, "efficientnet_lite0", **options)
    assert not third.cache_hit and "splits differ from this listing's" in caplog.text
    cache = read_cache(third.path)
    assert np.array_equal(cache.splits, seeded.splits[cache.index])


def test_an_extraction_option_is_declared_once_and_everything_follows_from_it():
    """extract.py's flags are ExtractOptions' fields; resolve takes exactly them; an unknown one is refused."""
    import dataclasses

    from features.errors import UsageError
    from features.extraction.settings import ExtractOptions, ExtractSettings

    parser = extract.build_parser()
    dests = {a.dest for a in parser._actions}
    fields = {f.name: f for f in dataclasses.fields(ExtractOptions)}
    assert {n for n, f in fields.items() if f.metadata.get("flag", True)} <= dests
    assert {n for n, f in fields.items() if not f.metadata.get("flag", True)} == {"progress", "checkpoint_batches"}
    for name in ("pooling", "tta", "engine", "runtime", "precision"):  # choices: the library's own constants
        action = next(a for a in parser._actions if a.dest == name)
        assert tuple(action.choices) == fields[name].metadata["choices"]
    settings = ExtractSettings.resolve("efficientnet_lite0", weights="none", image_size=32, out_dir="x", shard="1/4")
    assert settings.shard == (1, 4) and str(settings.out_dir) == "x" and settings.backbone.image_size == 32
    with pytest.raises(UsageError, match="pooling_mode: not an extraction option"):
        ExtractSettings.resolve("efficientnet_lite0", pooling_mode="max")
