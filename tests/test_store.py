"""The HDF5 cache: round trip, never half-written, refusals, shards as one file."""

import shutil

import h5py
import numpy as np
import pytest

from features import cache as store
from features.cli import classify, extract
from features.data import Skip, SkippedImage
from features.errors import CacheError
from helpers import blobs, write_cache

CLASSES = ["cat", "dog"]


def _write(path, rows, dim=4, attrs=None, skipped=(), batch=3):
    rows = np.asarray(rows)
    emb = np.stack([np.full(dim, r, np.float32) for r in rows])
    with store.CacheWriter(path, dim, CLASSES, chunk_rows=2) as w:
        for s in range(0, len(rows), batch):
            part = rows[s:s + batch]
            w.append(emb[s:s + batch], part % 2, ids=[f"img{r}.jpg" for r in part], index=part, splits=part % 3)
        w.finish({"backbone": "toy", "dataset": "d", "seed": 0, "split": [0.7, 0.15, 0.15],
                  "class_names": CLASSES, **(attrs or {})}, skipped)
    return emb


def test_round_trip(tmp_path):
    path = tmp_path / "c.h5"
    emb = _write(path, range(7), skipped=[SkippedImage(7, "bad.jpg", Skip("empty file", "Input is empty"))])
    cache = store.read_cache(path, verify=True)
    np.testing.assert_array_equal(cache.embeddings, emb)
    assert cache.ids.tolist() == [f"img{r}.jpg" for r in range(7)]
    assert cache.labels.tolist() == [r % 2 for r in range(7)]
    assert cache.class_names == CLASSES and cache.attrs["n_images"] == 7
    assert cache.skipped == [SkippedImage(7, "bad.jpg", Skip("empty file", "Input is empty"))]
    x, y = cache.split("test")
    assert len(x) == len(y) == 2  # rows 2 and 5
    assert store.read_attrs(path)["split"] == "[0.7, 0.15, 0.15]"


def test_an_interrupted_write_leaves_nothing(tmp_path):
    path = tmp_path / "c.h5"
    with pytest.raises(KeyboardInterrupt):
        with store.CacheWriter(path, 4, CLASSES) as w:
            w.append(np.zeros((2, 4)), [0, 1], ids=["a", "b"], index=[0, 1], splits=[0, 0])
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_refuses_missing_incomplete_foreign_and_corrupted(tmp_path):
    with pytest.raises(CacheError, match="no such"):
        store.read_cache(tmp_path / "none.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(CacheError, match="not a readable"):
        store.read_cache(junk)
    path = tmp_path / "c.h5"
    _write(path, range(4))
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(CacheError, match="incomplete"):
        store.read_cache(path)
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = True
        f["embeddings"][0, 0] = 42.0
    store.read_cache(path, verify=False)  # only when asked is the flag trusted
    with pytest.raises(CacheError, match="checksum"):
        store.read_cache(path)
    with pytest.raises(CacheError, match="checksum"):
        store.verify(path)


def test_shards_read_as_one_without_copying(tmp_path):
    whole = tmp_path / "whole.h5"
    emb = _write(whole, range(10))
    _write(tmp_path / "s1.h5", range(5, 10), skipped=[SkippedImage(10, "x.jpg", Skip("unreadable", "bad"))],
           attrs={"shard": "1/2"})
    _write(tmp_path / "s0.h5", range(0, 5), attrs={"shard": "0/2"})
    merged = store.merge_shards([tmp_path / "s1.h5", tmp_path / "s0.h5"], tmp_path / "out" / "m.h5")
    cache = store.read_cache(merged, verify=True)
    np.testing.assert_array_equal(cache.embeddings, emb)
    assert cache.index.tolist() == list(range(10)) and cache.attrs["n_images"] == 10
    assert cache.skipped == [SkippedImage(10, "x.jpg", Skip("unreadable", "bad"))]
    with h5py.File(merged) as f:
        assert f["embeddings"].is_virtual
    assert merged.stat().st_size < whole.stat().st_size
    (tmp_path / "s1.h5").rename(tmp_path / "elsewhere.h5")
    for read in (store.read_cache, store.verify, lambda p: store.CacheRows([p])):
        with pytest.raises(CacheError, match=r"shard\(s\) ../s1.h5 are missing"):
            read(merged)


def test_shards_that_overlap_or_disagree_are_refused(tmp_path):
    _write(tmp_path / "a.h5", range(0, 5), attrs={"shard": "0/2"})
    _write(tmp_path / "b.h5", range(4, 8), attrs={"shard": "1/2"})
    with pytest.raises(CacheError, match="overlap"):
        store.merge_shards([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "m.h5")
    _write(tmp_path / "c.h5", range(5, 8), attrs={"backbone": "other", "shard": "1/2"})
    with pytest.raises(CacheError, match="backbone"):
        store.merge_shards([tmp_path / "a.h5", tmp_path / "c.h5"], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_a_set_of_shards_that_is_not_whole_is_refused(tmp_path):
    for i, rows in enumerate((range(0, 3), range(3, 6), range(6, 9), range(9, 12))):
        _write(tmp_path / f"c.shard{i}of4.h5", rows, attrs={"shard": f"{i}/4"})
    shards = [tmp_path / f"c.shard{i}of4.h5" for i in range(4)]
    with pytest.raises(CacheError, match=r"not whole: 3 of 4 shards given, missing 2/4"):
        store.merge_shards(shards[:2] + shards[3:])
    with pytest.raises(CacheError, match="both shard 1/4"):
        store.merge_shards(shards + [shards[1]])
    _write(tmp_path / "other.h5", range(12, 14), attrs={"shard": "1/2"})
    with pytest.raises(CacheError, match="splits into 2 and 4 slices"):
        store.merge_shards(shards + [tmp_path / "other.h5"])
    _write(tmp_path / "single.h5", range(3), attrs={"shard": "0/1"})
    _write(tmp_path / "plain.h5", range(3))
    with pytest.raises(CacheError, match="plain.h5: not a shard"):
        store.merge_shards([tmp_path / "single.h5", tmp_path / "plain.h5"])
    assert not (tmp_path / "c.h5").exists()
    merged = store.merge_shards(shards)  # the whole set, by default under the single-process name
    assert merged == tmp_path / "c.h5" and store.read_cache(merged).index.tolist() == list(range(12))


def _identity(**changes):
    base = dict(dataset="flowers", fingerprint="f", source="photos", backbone="vgg19", slug="vgg19", weights="imagenet",
                image_size=224, resize_method="r")
    return store.CacheIdentity(**{**base, **changes})


def test_the_cache_path_is_made_from_its_identity():
    # The names every cache made before the identity had one object (a9865ce's cache_path): still hits.
    assert _identity().path("emb").as_posix() == "emb/flowers/vgg19-224.h5"
    assert _identity(image_size=192, pooling="max", weights="none", seed=2, split=(0.8, 0.1, 0.1)).path("emb").name \
        == "vgg19-192-max-random-seed2-split80-10-10.h5"
    named = _identity(weights="w.h5", weights_sha256="abcdef0123", slug="b", image_size=9).path("e").name
    assert named == "b-9-wabcdef01.h5"
    assert _identity(tta="flip", precision="bf16", max_per_class=5, shard=(1, 3)).path("e").name \
        == "vgg19-224-ttaflip-bf16-max5per-class.shard1of3.h5"
    key = _identity(shard=(1, 3)).key()
    assert key["shard"] == "1/3" and "tta" not in key and "precision" not in key and key["split"] == [0.7, 0.15, 0.15]
    assert _identity(tta="flip", precision="bf16").key()["precision"] == "bf16"


LITE = ["--backbone", "efficientnet_lite0", "--weights", "none", "--image-size", "32", "-q"]  # random weights: fast


def _shards(photos, out, seed="0", weights="none"):
    for i in range(2):
        assert extract.main(["--data-dir", str(photos), "--out", str(out), "--shard", f"{i}/2", "--seed", seed,
                             *LITE, "--weights", weights]) == 0
    return sorted(out.glob("**/*.shard*of2.h5"))


@pytest.mark.slow
def test_a_merge_refuses_a_shard_that_fails_its_checksum(image_folder, tmp_path, capsys):
    shards = _shards(image_folder, tmp_path / "emb")
    with h5py.File(shards[1], "r+") as f:
        f["embeddings"][0] = f["embeddings"][0] + 1.0
    assert extract.main(["--merge", *map(str, shards)]) == 2
    err = capsys.readouterr().err
    assert shards[1].name in err and "do not match their checksum" in err
    assert not store.merged_path(shards[0]).exists()


@pytest.mark.slow
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
        del f.attrs["rows_sha256"]  # a cache written before it was recorded (and so before its identity's)
        del f.attrs["identity_sha256"]
    assert len(store.read_cache(path).labels) == len(y)


@pytest.mark.parametrize("name,value", [("precision", "fp32"), ("runtime", "onnx"), ("backbone", "other"),
                                        ("weights", "imagenet"), ("image_size", 64)])
def test_what_a_cache_is_of_is_inside_a_checksum(name, value, tmp_path):
    """A bf16 cache's precision and runtime attributes were outside both checksums: edited to fp32's and copied to
    the fp32 name, it was a cache hit at fp32."""
    X, y = blobs()
    path = write_cache(tmp_path / "c-bf16.h5", X, y, ["a", "b", "c"], attrs={"precision": "bf16",
                                                                             "runtime": "openvino"})
    assert store.read_cache(path).attrs["precision"] == "bf16"
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value
    with pytest.raises(CacheError, match=r"what it is of \(dataset, backbone, .*\) does not match its checksum"):
        store.read_cache(path)
    with pytest.raises(CacheError, match="does not match its checksum"):
        store.read_attrs(path)


def test_a_bf16_cache_under_the_fp32_name_is_not_a_cache_hit(tmp_path):
    from features.extraction.run import _stale_reason

    X, y = blobs()
    key = {"backbone": "toy", "image_size": 8, "pooling": "avg"}
    path = write_cache(tmp_path / "toy-8.h5", X, y, ["a", "b", "c"], attrs={**key, "precision": "bf16"})
    reason, _ = _stale_reason(path, key, source=None)  # fp32's key says nothing of the precision
    assert reason == "its precision is 'bf16', now 'fp32'"


@pytest.mark.slow
def test_merge_onto_a_folder_is_refused(image_folder, tmp_path, capsys):
    shards = _shards(image_folder, tmp_path / "emb")
    store.merged_path(shards[0]).mkdir()
    assert extract.main(["--merge", *map(str, shards)]) == 2
    assert "taken by a folder" in capsys.readouterr().err


def test_a_huge_finite_embedding_is_refused(tmp_path, capsys):
    X, y = blobs()
    X[3] = 3e38
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    assert classify.main(["--features", str(cache), "--out", str(tmp_path / "r")]) == 2
    assert "1 rows hold values beyond ±100000" in capsys.readouterr().err
