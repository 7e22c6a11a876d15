"""Interrupted, concurrent and disk-full runs: nothing lost, nothing corrupted, resumed."""

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from features import cache as store
from features.cli import extract, finetune
from features.errors import DiskFullError, is_disk_full
from helpers import exit_code, fill, last_json, make_image_folder, paused_extraction, tmpfs

ROOT = Path(__file__).resolve().parents[1]
# Real weights (the pip package), so every process computes the same embeddings; one image a batch and a
# checkpoint every 8 batches, so the first checkpoint (where the runs below are stopped) is 8 of the 59 rows.
SLOW = ["--backbone", "efficientnet_lite0", "--image-size", "64", "--batch-size", "1", "--precision", "fp32"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "photos", per_class=30)
    (root / "cat" / "img7.png").write_text("broken")  # a skipped row must survive resuming too
    return root


@pytest.fixture(scope="module")
def uninterrupted(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    assert extract.main(["--data-dir", str(photos), "--out", str(out), "-q", *SLOW]) == 0
    return store.read_cache(next(out.glob("**/*.h5")))


def _argv(photos, out, *more):
    return ["--data-dir", str(photos), "--out", str(out), "-q", *SLOW, *more]


def _resume_and_compare(photos, out, uninterrupted, capsys):
    assert not list(out.glob("**/*.h5")), "a file under its final name after the interruption"
    assert list(out.glob("**/*.parts/rows-*.npz"))
    code = extract.main(["--data-dir", str(photos), "--out", str(out), "--json", "-q", *SLOW])
    stdout = capsys.readouterr().out
    assert code == 0
    result = last_json(stdout)
    assert 0 < result["resumed_rows"] < result["images"], result
    assert "resumed:" in stdout
    resumed = store.read_cache(result["cache"])
    assert resumed.ids.tolist() == uninterrupted.ids.tolist()
    assert np.array_equal(resumed.index, uninterrupted.index)
    assert np.array_equal(resumed.embeddings, uninterrupted.embeddings)
    assert not list(out.glob("**/*.lock")) and not list(out.glob("**/*.partial"))  # nothing outlives the run
    assert [s.id for s in resumed.skipped] == [s.id for s in uninterrupted.skipped] == ["cat/img7.png"]
    assert resumed.attrs["embeddings_sha256"] == uninterrupted.attrs["embeddings_sha256"]
    assert not list(out.glob("**/*.parts")), "checkpoints left after the cache was whole"


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_to_the_identical_cache(photos, uninterrupted, tmp_path, capsys):
    out = tmp_path / "out"
    with paused_extraction(_argv(photos, out), tmp_path) as proc:
        proc.kill()
        assert proc.wait(60) == -signal.SIGKILL
    _resume_and_compare(photos, out, uninterrupted, capsys)


@pytest.mark.slow
def test_ctrl_c_exits_cleanly_with_a_message_and_resumes(photos, uninterrupted, tmp_path, capsys):
    out = tmp_path / "out"
    with paused_extraction(_argv(photos, out), tmp_path) as proc:
        proc.send_signal(signal.SIGINT)
        assert exit_code(proc, 300) == 130  # a deadline only: past it, the test says where the child was
        err = proc.stderr.read()
    assert "interrupted" in err and "run the same command again" in err and "Traceback" not in err
    _resume_and_compare(photos, out, uninterrupted, capsys)


@pytest.mark.slow
def test_parts_made_with_other_settings_are_not_used(photos, tmp_path, capsys):
    with paused_extraction(_argv(photos, tmp_path / "out"), tmp_path) as proc:
        proc.kill()
    code = extract.main(["--data-dir", str(photos), "--out", str(tmp_path / "out"), "--json", "-q", *SLOW[:-2],
                         "--batch-size", "2"])
    assert code == 0 and last_json(capsys.readouterr().out)["resumed_rows"] == 0


@pytest.mark.slow
def test_a_second_writer_waits_for_the_first_then_finds_the_cache(photos, tmp_path, caplog, monkeypatch):
    from features.data import load_folder
    from features.extraction import run as extraction
    from features.models import build

    source = load_folder(photos, max_per_class=4)
    building, real = threading.Event(), build.create_backbone

    def slow_build(*args, **kwargs):  # the first run holds the lock while it builds and extracts
        building.set()
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "create_backbone", slow_build)
    args = dict(backbone="efficientnet_lite0", image_size=32, out_dir=tmp_path, progress=False)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", extraction.extract(source, **args)))
    first.start()
    assert building.wait(60)
    second = extraction.extract(source, **args)
    first.join()
    assert not results["first"].cache_hit and second.cache_hit
    assert "being written by another run" in caplog.text


def test_writer_lock_is_released_when_its_holder_dies(tmp_path):
    path = tmp_path / "c.h5"
    code = f"from features import cache as store\nwith store.writer_lock({str(path)!r}):\n    import os; os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 9
    start = time.monotonic()
    with store.writer_lock(path, wait_message=False):
        pass
    assert time.monotonic() - start < 1


@pytest.mark.slow
def test_a_cache_that_fails_its_checksum_is_recomputed(photos, tmp_path, capsys, caplog):
    argv = ["--data-dir", str(photos), "--max-per-class", "3", "--out", str(tmp_path), "--json", "-q",
            "--image-size", "32"]
    assert extract.main(argv) == 0
    path = last_json(capsys.readouterr().out)["cache"]
    with h5py.File(path, "r+") as f:
        f["embeddings"][0, 0] += 1.0  # flipped on disk; the flag still says complete
    assert extract.main(argv) == 0
    assert not last_json(capsys.readouterr().out)["cache_hit"]
    assert "do not match their checksum" in caplog.text
    store.read_cache(path)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["checkpoint", "cache"])
def test_a_full_disk_during_extraction_says_so_and_leaves_no_final_file(where, photos, tmp_path, capsys,
                                                                        monkeypatch):
    if where == "checkpoint":
        monkeypatch.setattr(store.Checkpoints, "write", _enospc)
    else:
        monkeypatch.setattr(store.CacheWriter, "append", _enospc)
    code = extract.main(["--data-dir", str(photos), "--max-per-class", "3", "--out", str(tmp_path),
                         "--image-size", "32", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "no space left on the device" in err and "run the same command again" in err
    assert not list(tmp_path.glob("**/*.h5")) and not list(tmp_path.glob("**/*.partial"))
    assert not list(tmp_path.glob("**/*.lock"))


@pytest.mark.slow
def test_a_full_disk_during_finetuning_says_so_and_leaves_no_run_folder(photos, tmp_path, capsys, monkeypatch):
    import keras

    monkeypatch.setattr(keras.Model, "save", _enospc)
    code = finetune.main(["--data-dir", str(photos), "--max-per-class", "10", "--image-size", "32", "--unfreeze",
                          "0", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "no space left on the device" in err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["results.jsonl"]) and not runs_rows(tmp_path)


def runs_rows(out):
    from features.records import runs

    return runs.read_results(out) if (out / "results.jsonl").exists() else []


def test_disk_full_is_recognised_however_it_is_worded(capsys):
    from features.cli import common

    assert is_disk_full(OSError(errno.ENOSPC, "x"))
    assert is_disk_full(OSError("Can't write data (file write failed: errno = 28, error message = 'No space "
                                "left on device')"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))

    def full():
        raise DiskFullError("no space left on the device while writing x.h5; free some space")

    def hdf5_full():  # HDF5's own words, an OSError, as a command line meets it
        raise OSError("Can't write data (file write failed: errno = 28, filename = 'runs/x.h5')")

    assert common.run(full, "t.py") == 2 and common.run(hdf5_full, "t.py") == 2
    assert capsys.readouterr().err.splitlines() == [
        "t.py: error: no space left on the device while writing x.h5; free some space",
        "t.py: error: no space left on the device while writing runs/x.h5; free some space and run the same "
        "command again. Nothing was written under a final name."]


def test_no_path_reaches_a_shell():
    """Paths from flags and cache attributes are data: no shell, no os.system, anywhere."""
    sources = [*ROOT.glob("*.py"), *ROOT.glob("features/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    for path in sources:
        text = path.read_text()
        for needle in ("shell=True", "os.system(", "os.popen(", "commands.getoutput"):
            assert needle not in text, f"{path.name} uses {needle}"
    assert os.path.exists(ROOT / "extract.py")


# --- The results table, run folders and fine-tunes: full disks, concurrent runs, killed runs --------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB tmpfs; the caller fills it."""
    with tmpfs(tmp_path / "disk", "size=1m") as mount:
        yield mount


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs: room for the first checkpoint of a fine-tune, not for the second."""
    with tmpfs(tmp_path / "disk", "size=20m") as mount:
        yield mount


def test_a_row_cut_short_by_a_full_disk_is_undone(tmp_path, monkeypatch):
    from features.records import runs

    runs.append_result(tmp_path, {"run": 1})
    before = (tmp_path / "results.jsonl").read_bytes()
    real_write, calls = os.write, []

    def short_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # the disk takes half the row ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then nothing

    monkeypatch.setattr(runs.os, "write", short_then_full)
    with pytest.raises(DiskFullError, match="no space left"):
        runs.append_result(tmp_path, {"run": 2})
    monkeypatch.undo()
    assert (tmp_path / "results.jsonl").read_bytes() == before and len(calls) == 2
    runs.append_result(tmp_path, {"run": 3})
    assert [r["run"] for r in runs.read_results(tmp_path)] == [1, 3]


def test_a_full_tmpfs_leaves_the_table_whole(tiny_disk):
    from features.records import runs

    runs.append_result(tiny_disk, {"run": 1, "pad": "x" * 200})
    fill(tiny_disk)
    with pytest.raises(DiskFullError):
        runs.append_result(tiny_disk, {"run": 2, "pad": "y" * 5000})
    assert [r["run"] for r in runs.read_results(tiny_disk)] == [1]


def test_a_damaged_table_is_read_up_to_its_damage_with_a_warning(tmp_path, caplog):
    from features.records import runs

    (tmp_path / "results.jsonl").write_text('{"run": 1}\n{"run": 2, "acc\n{"run": 3}{"run": 4}\n{"run": 5}\n')
    assert [r["run"] for r in runs.read_results(tmp_path)] == [1, 5]
    assert "results.jsonl line 2 is damaged" in caplog.text and "line 3 is damaged" in caplog.text


def test_run_folders_started_in_the_same_second_get_their_own_names(tmp_path, monkeypatch):
    import datetime

    from features.records import runs

    fixed = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.timezone.utc)
    monkeypatch.setattr(runs, "_now", lambda: fixed)
    with runs.run_folder(tmp_path, "flowers", "lite0", "logreg") as a:
        with runs.run_folder(tmp_path, "flowers", "lite0", "logreg") as b:  # a second run, same second
            (b.path / "head.skops").write_text("b")
        (a.path / "head.skops").write_text("a")
    assert a.final != b.final
    assert (a.final / "head.skops").read_text() == "a" and (b.final / "head.skops").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.final.name, b.final.name])


@pytest.mark.slow
def test_concurrent_classify_runs_each_keep_their_folder_and_row(tmp_path):
    from helpers import blobs, write_cache

    X, y = blobs(classes=2)
    cache = write_cache(tmp_path / "c.h5", X, y, ["cat", "dog"])
    argv = [sys.executable, "classify.py", "--features", str(cache), "--out", str(tmp_path / "runs"),
            "--n-jobs", "1", "-q"]
    procs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    from features.records import runs

    rows = runs.read_results(tmp_path / "runs")
    folders = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(rows) == 3 and len({r["run_dir"] for r in rows}) == 3 and len(folders) == 3
    assert all((f / "head.skops").exists() for f in folders)


@pytest.mark.slow
def test_a_rerun_after_a_full_disk_finishes_when_every_row_was_checkpointed(photos, tmp_path, capsys,
                                                                             monkeypatch):
    argv = ["--data-dir", str(photos), "--max-per-class", "3", "--out", str(tmp_path), "--image-size", "32", "-q"]
    monkeypatch.setattr(store.CacheWriter, "append", _enospc)  # every row checkpointed, then the disk fills
    assert extract.main(argv) == 2
    monkeypatch.undo()
    capsys.readouterr()
    assert extract.main(argv + ["--json"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["resumed_rows"] == result["images"] > 0
    store.read_cache(result["cache"])
    assert not list(tmp_path.glob("**/*.partial")) and not list(tmp_path.glob("**/*.parts"))


def test_a_cache_writer_that_cannot_even_start_leaves_no_partial_file(tmp_path, monkeypatch):
    def full_on_create(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full_on_create)
    with pytest.raises(OSError):
        with store.CacheWriter(tmp_path / "c.h5", 4, ["a", "b"]):
            pass
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_finetuning_onto_a_disk_that_fills_mid_checkpoint_exits_2_not_a_crash(photos, small_disk):
    """Keras' checkpoint writer left an HDF5 file open; closing it at exit crashed (exit 139)."""
    argv = [sys.executable, "finetune.py", "--data-dir", str(photos), "--max-per-class", "8", "--image-size", "32",
            "--batch-size", "4", "--epochs", "2", "--head-epochs", "1", "--out", str(small_disk / "runs"), "-q"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("finetune.py: error: no space left on the device") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not any((small_disk / "runs").iterdir())


@pytest.mark.slow
def test_what_a_killed_finetune_left_is_removed_by_the_next_run_and_said(photos, tmp_path, caplog):
    from features.cli import classify
    from helpers import blobs, write_cache

    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "finetune.py", "--data-dir", str(photos), "--image-size", "32",
                             "--batch-size", "4", "--epochs", "50", "--patience", "50", "--out", str(out), "-q"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    while not list(out.glob(".*.partial/best.weights.h5")) and time.monotonic() - start < 240:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    proc.wait(60)
    left = list(out.glob(".*.partial"))
    assert len(left) == 1 and len([p for p in out.iterdir() if not p.name.startswith(".")]) == 1  # and its claim
    X, y = blobs()
    cache = write_cache(tmp_path / "c.h5", X, y, ["a", "b", "c"])
    assert classify.main(["--features", str(cache), "--out", str(out), "--n-jobs", "1", "-q"]) == 0
    assert not list(out.glob(".*.partial")) and len([p for p in out.iterdir() if p.is_dir()]) == 1
    assert f"removed {left[0]}, left by process {proc.pid}, which is gone" in caplog.text


def test_a_live_runs_temporary_folder_is_left_alone(tmp_path):
    from features.io import remove_abandoned

    mine = tmp_path / f".20261126-120000-x.{os.getpid()}.partial"
    mine.mkdir()
    assert remove_abandoned(tmp_path) == [] and mine.exists()


def test_the_writers_lock_removes_a_dead_writers_partial_cache_and_not_a_live_ones(tmp_path, caplog):
    from features.io import pid_alive

    dead = next(pid for pid in range(4_000_000, 4_100_000) if not pid_alive(pid))
    cache = tmp_path / "flowers" / "lite0-224.h5"
    cache.parent.mkdir()
    (cache.parent / f"{cache.name}.{dead}.partial").write_bytes(b"half")
    mine = cache.parent / f"{cache.name}.{os.getpid()}.partial"
    mine.write_bytes(b"mine")
    with store.writer_lock(cache):
        pass
    assert sorted(p.name for p in cache.parent.iterdir()) == [mine.name]
    assert f"left by process {dead}, which is gone" in caplog.text
