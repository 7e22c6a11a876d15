"""Corrections (features/data/corrections.py): decisions about photos, written whole by any number of writers,
refused in one line when damaged or crafted, and honoured by the scripts on the cache as it is."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.cli import audit as audit_cli
from features.cli import classify
from features.data import corrections
from features.io import file_sha256
from helpers import blobs, last_json, write_cache, write_image

CLASSES = ["ant", "bee", "cow"]


@pytest.fixture
def planted(tmp_path):
    """Photos on disk (one file per row), their cache (separable embeddings), with 30 training and 12 test photos
    filed under the wrong class: ``(photos, cache, truth, wrong rows)``."""
    X, truth = blobs(n_per_class=60, classes=3, dim=16, spread=0.8, seed=3)
    ids = [f"{CLASSES[k]}/{n}.png" for n, k in enumerate(truth)]
    photos = tmp_path / "photos"
    for n, photo_id in enumerate(ids):
        write_image(photos / photo_id, seed=n, size=(8, 8))
    rng = np.random.default_rng(0)
    splits = rng.permutation(np.repeat([0, 1, 2], [120, 24, 36]).astype(np.uint8))
    wrong = np.concatenate([rng.choice(np.flatnonzero(splits == 0), 30, replace=False),
                            rng.choice(np.flatnonzero(splits == 2), 12, replace=False)])
    labels = truth.copy()
    labels[wrong] = (truth[wrong] + 1) % 3
    cache = write_cache(tmp_path / "emb" / "c.h5", X, labels, CLASSES, splits=splits, ids=ids,
                        attrs={"source": str(photos), "source_kind": "folder"})
    return photos, cache, truth, wrong, ids


def _decisions(path, photos, ids, rows, decision, labels=None):
    for n, row in enumerate(rows):
        label = None if labels is None else CLASSES[labels[n]]
        corrections.append_decision(path, corrections.decide(photos, ids[row], decision, label=label))


def test_corrections_raise_the_test_accuracy_on_the_same_cache_and_say_what_they_touched(planted, tmp_path, capsys,
                                                                                          run_main, caplog):
    photos, cache, truth, wrong, ids = planted
    before = file_sha256(cache)
    code, out, err = run_main(classify.main, ["--features", str(cache), "--out", str(tmp_path / "runs"), "--json",
                                              "--n-jobs", "1", "-q"])
    assert code == 0, err
    plain = last_json(out)
    fix = tmp_path / "corrections.jsonl"
    _decisions(fix, photos, ids, wrong, "relabel", truth[wrong])
    right = [r for r in range(len(ids)) if r not in set(wrong)]
    removed, kept, (changed, gone) = right[:3], right[3], right[4:6]
    _decisions(fix, photos, ids, removed, "remove")
    _decisions(fix, photos, ids, [kept], "keep")
    _decisions(fix, photos, ids, [changed, gone], "remove")
    write_image(photos / ids[changed], seed=999, size=(8, 8))  # edited after the decision: left out
    (photos / ids[gone]).unlink()  # deleted after it: left out
    code, out, err = run_main(classify.main, ["--features", str(cache), "--out", str(tmp_path / "runs"), "--json",
                                              "--n-jobs", "1", "--corrections", str(fix), "-q"])
    assert code == 0, err
    fixed = last_json(out)
    record = fixed["corrections"]
    assert record["sha256"] == file_sha256(fix) and record["file"] == str(fix.resolve())
    assert (record["relabelled"], record["removed"], record["kept"], record["left_out"]) == (len(wrong), 3, 1, 2)
    assert "3 removed, 42 relabelled, 1 kept, 2 left out" in out
    n_test = plain["split_counts"]["test"]
    removed_test = sum(1 for r in removed if r in set(_test_rows(cache)))
    assert fixed["n_test"] == n_test - removed_test and record["uncorrected_n_test"] == n_test
    assert record["uncorrected_test_accuracy"] == pytest.approx(plain["accuracy"], abs=0.06)
    assert fixed["accuracy"] > record["uncorrected_test_accuracy"] + 0.15  # 12 of 36 test labels were wrong
    assert file_sha256(cache) == before  # the cache used as it is: no extraction, nothing rewritten
    saved = json.loads((Path(fixed["run_dir"]) / "metrics.json").read_text())
    assert saved["corrections"] == record
    assert err.count("left out of the corrections") == 2 or caplog.text.count("left out of the corrections") == 2


def _test_rows(cache):
    from features.cache import read_cache

    return np.flatnonzero(read_cache(cache).splits == 2).tolist()


def test_a_streamed_head_honours_them_too(planted, tmp_path, run_main):
    photos, cache, truth, wrong, ids = planted
    fix = tmp_path / "corrections.jsonl"
    _decisions(fix, photos, ids, wrong, "relabel", truth[wrong])
    code, out, err = run_main(classify.main, ["--features", str(cache), "--model", "sgd", "--out",
                                              str(tmp_path / "runs"), "--json", "--corrections", str(fix), "-q"])
    assert code == 0, err
    result = last_json(out)
    assert result["corrections"]["relabelled"] == len(wrong)
    assert result["accuracy"] > result["corrections"]["uncorrected_test_accuracy"] + 0.15


def test_audit_reads_the_corrected_photos(planted, tmp_path, run_main):
    photos, cache, truth, wrong, ids = planted
    fix = tmp_path / "corrections.jsonl"
    _decisions(fix, photos, ids, wrong[:5], "remove")
    code, out, err = run_main(audit_cli.main, ["--features", str(cache), "--out", str(tmp_path / "audits"), "--json",
                                               "--corrections", str(fix), "-q"])
    assert code == 0, err
    found = json.loads((Path(last_json(out)["folder"]) / "audit.json").read_text())
    assert found["photos"] == len(ids) - 5 and found["corrections"]["removed"] == 5


@pytest.mark.parametrize("content,needle", [
    (b"not json\n", "line 1 is not JSON"),
    (b'{"id": "../../etc/passwd", "sha256": "' + b"0" * 64 + b'", "decision": "remove"}\n',
     "line 1 names a photo that leaves the photo folder"),
    (b'{"id": "/etc/passwd", "sha256": "' + b"0" * 64 + b'", "decision": "remove"}\n', "is an absolute path"),
    (b'{"id": "ant/0.png", "sha256": "' + b"0" * 64 + b'", "decision": "relabel", "label": "wasp"}\n',
     "relabels to 'wasp', not a class of this data (ant, bee, cow)"),
    (b'{"id": "ant/0.png", "sha256": "' + b"0" * 64 + b'", "decision": "burn"}\n', "decides 'burn'"),
    (b'{"id": "ant/0.png", "sha256": "abc", "decision": "remove"}\n', "has no SHA-256"),
    (b'{"id": "ant/0.png", "sha256": "' + b"0" * 64 + b'", "decision": "remove", "run": "rm -rf"}\n',
     "holds 'run', not a field"),
    (b"\xff\xfe\n", "not UTF-8"),
    ("fifo", "a FIFO"),
    ("folder", "a folder"),
    ("huge", "larger than"),
])
def test_a_damaged_or_crafted_corrections_file_is_refused_in_one_line(content, needle, planted, tmp_path, capsys,
                                                                     run_main, monkeypatch):
    _, cache, *_ = planted
    fix = tmp_path / "corrections.jsonl"
    if content == "fifo":
        os.mkfifo(fix)
    elif content == "folder":
        fix.mkdir()
    elif content == "huge":
        monkeypatch.setattr(corrections, "MAX_BYTES", 1000)
        fix.write_text("\n" * 2000)
    else:
        fix.write_bytes(content)
    code, out, err = run_main(classify.main, ["--features", str(cache), "--out", str(tmp_path / "runs"),
                                              "--corrections", str(fix), "-q"])
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"--corrections {fix}" in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/metrics.json"))


def test_the_last_decision_about_a_photo_wins_and_a_tfds_cache_is_refused(planted, tmp_path):
    photos, cache, truth, wrong, ids = planted
    fix = tmp_path / "c.jsonl"
    _decisions(fix, photos, ids, [0], "remove")
    _decisions(fix, photos, ids, [0], "keep")
    read = corrections.read_corrections(fix)
    assert read.decisions[ids[0]].decision == "keep" and read.summary() == {"keep": 1, "relabel": 0, "remove": 0}
    from features.errors import UsageError

    with pytest.raises(UsageError, match="TFDS set"):
        corrections.apply_corrections(read, ids=ids, labels=truth, class_names=CLASSES, photo_root=None)


WRITER = """
import sys
from features.data import corrections
for n in range(int(sys.argv[3])):
    corrections.append_decision(sys.argv[1], corrections.Decision(
        id=f"{sys.argv[2]}/{n}.png", sha256="0" * 64, decision="remove", at="t"))
"""


def test_two_writers_appending_at_once_lose_no_decision(tmp_path):
    fix = tmp_path / "corrections.jsonl"
    root = Path(__file__).resolve().parents[1]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(fix), name, "300"], cwd=root)
             for name in ("tab1", "tab2")]
    assert [p.wait(120) for p in procs] == [0, 0]
    read = corrections.read_corrections(fix)
    assert len(read.decisions) == 600 and len(fix.read_text().splitlines()) == 600
    assert not list(tmp_path.glob(".*.lock"))  # the lock is gone with its last holder


@pytest.mark.slow
def test_finetune_honours_them_on_the_listing(tmp_path, run_main):
    from features.cli import finetune
    from features.data import load_folder
    from helpers import make_image_folder

    photos = make_image_folder(tmp_path / "pets", per_class=12)
    source = load_folder(photos)
    test = [source.ids[i] for i in source.rows("test")]
    train = [source.ids[i] for i in source.rows("train")]
    fix = tmp_path / "corrections.jsonl"
    for photo_id in (test[0], train[0]):
        corrections.append_decision(fix, corrections.decide(photos, photo_id, "remove"))
    other = "dog" if train[1].startswith("cat") else "cat"
    corrections.append_decision(fix, corrections.decide(photos, train[1], "relabel", label=other))
    code, out, err = run_main(finetune.main, ["--data-dir", str(photos), "--weights", "none", "--image-size", "32",
                                              "--unfreeze", "0", "--epochs", "1", "--batch-size", "8", "--out",
                                              str(tmp_path / "runs"), "--corrections", str(fix), "--json", "-q"])
    assert code == 0, err
    result = last_json(out)
    record = result["corrections"]
    assert (record["removed"], record["relabelled"], record["left_out"]) == (2, 1, 0)
    assert result["n_test"] == len(test) - 1 and record["uncorrected_n_test"] == len(test)
    assert 0 <= record["uncorrected_test_accuracy"] <= 1 and "2 removed, 1 relabelled" in out
