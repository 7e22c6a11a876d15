"""Photo ids read back from caches and run files stay inside the photo folder (hostile pass five, defect 3)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from features.cli import audit as audit_cli
from features.cli import classify
from features.data import id_problem, photo_path
from features.errors import UsageError
from features.records.runs import RunFiles
from helpers import blobs, make_image_folder, write_cache

BAD_IDS = ["../outside.png", "a/../../outside.png", "/etc/passwd", "..", "a/..", "C:\\x.png", "..\\x.png", ""]


@pytest.mark.parametrize("photo_id", ["roses/1.jpg", "a/b/c.png", "x..y.png", "tf_flowers-train.tfrecord-00000__3",
                                      ".../x.png"])
def test_a_relative_id_inside_the_folder_is_a_path_under_it(photo_id, tmp_path):
    assert id_problem(photo_id) is None
    assert photo_path(tmp_path, photo_id) == tmp_path / photo_id


@pytest.mark.parametrize("photo_id", BAD_IDS + [None, 3])
def test_an_id_that_is_absolute_or_climbs_out_is_refused(photo_id, tmp_path):
    assert id_problem(photo_id)
    with pytest.raises(UsageError, match="ids are paths relative to the photo folder"):
        photo_path(tmp_path, photo_id)


@pytest.mark.parametrize("bad", ["../outside.png", "OUTSIDE"])
def test_a_cache_whose_id_leaves_the_photo_folder_is_refused_and_the_file_never_read(bad, tmp_path, run_main):
    """The audit hashed and drew `Path(data_dir) / id`: `../outside.png` or an absolute id put a file from
    outside the photo folder into duplicates.png, a picture made to be shared."""
    root = make_image_folder(tmp_path / "photos", classes=("a", "b", "c"), per_class=12, exts=(".png",))
    outside = tmp_path / "outside.png"
    shutil.copyfile(root / "a" / "img0.png", outside)
    ids = sorted(str(p.relative_to(root)) for p in root.glob("*/*.png"))
    ids[0] = str(outside) if bad == "OUTSIDE" else bad
    X, y = blobs(n_per_class=12)
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"], ids=ids,  # checksums recomputed, as anyone can
                        attrs={"source": str(root), "source_kind": "folder", "dataset": "photos"})
    code, _, err = run_main(audit_cli.main, ["--features", str(cache), "--out", str(tmp_path / "o")])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"the id {ids[0]!r}" in err and "ids are paths relative to the photo folder" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_run_file_whose_id_leaves_the_photo_folder_is_refused_where_it_is_read(tmp_path):
    """explain_top_losses joined probabilities.npz's ids to the photo folder; that file has no checksum."""
    X, y = blobs(n_per_class=20)
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    assert classify.main(["--features", str(cache), "--out", str(tmp_path / "runs"), "-q", "--n-jobs", "1"]) == 0
    run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    npz = Path(run) / RunFiles.PROBABILITIES
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["test_ids"] = arrays["test_ids"].astype(object)
    arrays["test_ids"][0] = "../../../etc/passwd"
    arrays["test_ids"] = arrays["test_ids"].astype(str)
    with open(npz, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(UsageError, match=r"test: the id '\.\./\.\./\.\./etc/passwd' leaves the photo folder"):
        RunFiles(run).read_probabilities()
