"""Listing folders, splitting, TFDS loading (mocked, and offline)."""

import time

import numpy as np
import pytest

from features.data import load_folder, load_tfds, parse_split, stratified_split
from features.errors import DatasetUnavailableError, UsageError
from helpers import make_image_folder, write_image


def test_lists_classes_sorted_and_ignores_loose_and_hidden_files(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("zebra", "ant"), per_class=4)
    (root / "manifest.csv").write_text("x")
    (root / "ant" / ".DS_Store").write_bytes(b"\0")
    (root / "ant" / "._img0.jpg").write_bytes(b"\0")  # macOS resource fork
    (root / "ant" / "notes.txt").write_text("x")
    (root / ".hidden").mkdir()
    write_image(root / ".hidden" / "x.jpg", 1)
    write_image(root / "ant" / "UPPER.JPEG", 2)
    write_image(root / "ant" / "pic.BMP", 3, fmt="BMP")
    write_image(root / "ant" / "nested" / "deep.gif", 4, fmt="GIF")
    src = load_folder(root)
    assert src.class_names == ["ant", "zebra"]
    ant = [i for i, label in zip(src.ids, src.labels) if label == 0]
    assert sorted(ant) == ant and len(ant) == 7
    assert "ant/nested/deep.gif" in ant and "ant/UPPER.JPEG" in ant
    assert all(i.startswith("zebra/") for i, label in zip(src.ids, src.labels) if label == 1)


def test_predefined_split_folders_and_a_carved_val(tmp_path):
    root = tmp_path / "d"
    make_image_folder(root / "train", per_class=10)
    make_image_folder(root / "test", per_class=3)
    src = load_folder(root)
    counts = src.split_counts()
    assert counts["test"] == 6 and counts["val"] > 0 and counts["train"] + counts["val"] == 20
    assert all(i.startswith("test/") for i, s in zip(src.ids, src.splits) if s == 2)
    assert all(i.startswith("train/") for i, s in zip(src.ids, src.splits) if s == 1)


def test_validation_is_a_val_folder(tmp_path):
    root = tmp_path / "d"
    for split, n in (("train", 6), ("validation", 2), ("test", 2)):
        make_image_folder(root / split, per_class=n)
    assert load_folder(root).split_counts() == {"train": 12, "val": 4, "test": 4}


def test_refuses_one_class_empty_class_and_missing_folder(tmp_path):
    make_image_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DatasetUnavailableError, match="at least two"):
        load_folder(tmp_path / "one")
    root = make_image_folder(tmp_path / "two")
    (root / "empty_class").mkdir()
    with pytest.raises(DatasetUnavailableError, match="empty_class"):
        load_folder(root)
    with pytest.raises(DatasetUnavailableError, match="no such folder"):
        load_folder(tmp_path / "nope")


def test_stratified_split_follows_fractions_per_class_and_the_seed():
    labels = np.repeat([0, 1, 2], [100, 40, 7])
    codes = stratified_split(labels, (0.7, 0.15, 0.15), seed=0)
    for label, n in ((0, 100), (1, 40), (2, 7)):
        got = np.bincount(codes[labels == label], minlength=3)
        assert np.all(np.abs(got - n * np.array([0.7, 0.15, 0.15])) < 1)
    assert np.array_equal(codes, stratified_split(labels, (0.7, 0.15, 0.15), seed=0))
    assert not np.array_equal(codes, stratified_split(labels, (0.7, 0.15, 0.15), seed=1))


def test_split_is_the_same_for_the_same_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=20)
    a, b = load_folder(root, seed=3), load_folder(root, seed=3)
    assert a.ids == b.ids and np.array_equal(a.splits, b.splits)


def test_max_per_class_is_a_seeded_sample(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=10)
    src = load_folder(root, max_per_class=4, seed=0)
    assert np.bincount(src.labels).tolist() == [4, 4]
    assert load_folder(root, max_per_class=4, seed=0).ids == src.ids


@pytest.mark.parametrize("text,want", [("0.7,0.15,0.15", (0.7, 0.15, 0.15)), ("80/10/10", (0.8, 0.1, 0.1)),
                                       ("0.8,0.2,0", (0.8, 0.2, 0.0))])
def test_parse_split(text, want):
    assert np.allclose(parse_split(text), want)


@pytest.mark.parametrize("text", ["0.5,0.2,0.2", "0.7,0.3", "a,b,c", "0,0.5,0.5", "1.2,-0.1,-0.1"])
def test_parse_split_refuses(text):
    with pytest.raises(UsageError, match="^split "):  # the parameter's name: this is the API
        parse_split(text)


def test_tfds_listing_with_mock_data(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr("features.data.listing._host_reachable", lambda host, timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=30):
        src = load_tfds("tf_flowers", seed=0)
    assert src.kind == "tfds" and len(src) == 30 and len(set(src.ids)) == 30
    assert src.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]  # TFDS order
    assert src.split_counts()["train"] > src.split_counts()["test"]


def test_tfds_offline_fails_fast_and_names_data_dir(offline, tmp_path):
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as err:
        load_tfds("cats_vs_dogs", tfds_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    assert "data_dir=DIR" in str(err.value) and "cats_vs_dogs" in str(err.value)


def test_unknown_tfds_name():
    with pytest.raises(UsageError, match="tf_flowers"):
        load_tfds("mnist")
