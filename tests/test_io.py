"""The guarded reader (features/io.py) and every reader built on it: a FIFO, a link to /dev/zero or
/dev/urandom and a file past its format's bound are refused in a bounded time, never read without end
or waited on, and each reader says so in its own terms."""

import os

import pytest

from features import io
from features.errors import ToolkitError
from helpers import within

KINDS = ("fifo", "dev-zero", "dev-urandom", "oversized")


def _make(path, kind, limit):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind.startswith("dev-"):
        path.symlink_to(f"/dev/{kind[4:]}")
    else:
        with open(path, "wb") as f:
            f.truncate(limit + 1)  # sparse: past the bound without using the disk




@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reader", ["read_regular", "read_text", "read_json", "file_sha256", "check_regular",
                                    "regular_file"])
def test_the_guarded_reader_refuses_what_is_not_a_bounded_regular_file(tmp_path, reader, kind):
    limit = 1000
    path = tmp_path / "file"
    _make(path, kind, limit)
    calls = {"read_regular": lambda: io.read_regular(path, limit), "read_text": lambda: io.read_text(path, limit),
             "read_json": lambda: io.read_json(path, limit), "file_sha256": lambda: io.file_sha256(path, limit),
             "check_regular": lambda: io.check_regular(path, limit)}

    def with_file():
        with io.regular_file(path, limit) as f:
            return f.read()

    box = within(20, calls.get(reader, with_file))
    error = box.get("error")
    expected = io.TooLarge if kind == "oversized" else io.NotRegularFile
    assert isinstance(error, expected), box
    says = ("more than the 1000 bytes" if kind == "oversized" else
            "not a regular file but a " + ("FIFO" if kind == "fifo" else "device"))
    assert str(path) in str(error) and says in str(error)


def test_the_guarded_reader_reads_a_regular_file_up_to_its_size(tmp_path):
    path = tmp_path / "record.json"
    path.write_text('{"a": 1}')
    assert io.read_json(path) == {"a": 1} and io.read_regular(path, 8) == b'{"a": 1}'
    assert io.file_sha256(path) == __import__("hashlib").sha256(b'{"a": 1}').hexdigest()
    link = tmp_path / "link.json"
    link.symlink_to(path)  # a link to a regular file is that file
    assert io.read_json(link) == {"a": 1}
    assert "model name" in io.read_system_file("/proc/cpuinfo") or io.read_system_file("/proc/cpuinfo") == ""


def _run_folder(tmp_path, bad, kind):
    """A run folder whose file ``bad`` is made ``kind``."""
    from features.io import DATA_LIMIT, RECORD_LIMIT, TABLE_LIMIT
    from features.records.runs import RunFiles

    folder = tmp_path / "run"
    folder.mkdir()
    limit = {RunFiles.CONFIG: RECORD_LIMIT, RunFiles.METRICS: RECORD_LIMIT, RunFiles.PROBABILITIES: DATA_LIMIT,
             RunFiles.PREDICTIONS: TABLE_LIMIT, RunFiles.HISTORY: TABLE_LIMIT}[bad]
    _make(folder / bad, kind, limit)
    return RunFiles(folder)


def _readers():
    """(name, the file it reads, how to call it on a folder, what it must raise or return)."""
    from features.errors import UsageError
    from features.records.runs import RunFiles

    return {
        "config.json": (RunFiles.CONFIG, lambda f: f.read_config(), UsageError),
        "metrics.json": (RunFiles.METRICS, lambda f: f.read_metrics(), UsageError),
        "probabilities.npz": (RunFiles.PROBABILITIES, lambda f: f.read_probabilities(), UsageError),
        "predictions.csv": (RunFiles.PREDICTIONS, lambda f: f.test_ids(), OSError),
        "history.csv": (RunFiles.HISTORY, lambda f: f.validation_curve(), []),
    }


# The bound of a table or an array file is gigabytes: past it is tested on the records, not on those.
RUN_FILE_CASES = [(name, kind) for name in ("config.json", "metrics.json", "probabilities.npz", "predictions.csv",
                                            "history.csv") for kind in KINDS
                  if kind != "oversized" or name.endswith(".json")]


@pytest.mark.parametrize(("name", "kind"), RUN_FILE_CASES)
def test_a_run_folders_readers_refuse_a_special_or_oversized_file(tmp_path, name, kind):
    file, call, expected = _readers()[name]
    box = within(20, lambda: call(_run_folder(tmp_path, file, kind)))
    if isinstance(expected, list):
        assert box == {"value": expected}
    else:
        assert isinstance(box.get("error"), expected), box


@pytest.mark.parametrize("kind", KINDS)
def test_the_results_table_the_head_file_and_the_export_record_refuse_it_in_one_line(tmp_path, kind):
    from features.errors import UsageError
    from features.heads.files import load_head
    from features.io import DATA_LIMIT, RECORD_LIMIT, TABLE_LIMIT
    from features.records.runs import RESULTS_FILE, read_results
    from features.serve.exported import RECORD, read_record

    for path, limit, call in ((tmp_path / "out" / RESULTS_FILE, TABLE_LIMIT, lambda: read_results(tmp_path / "out")),
                              (tmp_path / "run" / "head.skops", DATA_LIMIT, lambda: load_head(tmp_path / "run" /
                                                                                            "head.skops")),
                              (tmp_path / "export" / RECORD, RECORD_LIMIT, lambda: read_record(tmp_path / "export"))):
        if kind == "oversized" and limit > RECORD_LIMIT:
            continue
        _make(path, kind, limit)
        box = within(20, call)
        error = box.get("error")
        assert isinstance(error, UsageError) and isinstance(error, ToolkitError), (path, box)
        assert str(path) in str(error) and "\n" not in str(error)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_checkpoints_key_or_part_that_is_special_starts_it_over(tmp_path, kind):
    """A checkpoint folder whose key.json or a part is a FIFO or a device is not resumed from: it starts over."""
    import numpy as np

    from features.cache.writer import Checkpoints

    checkpoints = Checkpoints(tmp_path / "cache.h5", {"backbone": "x"})
    folder = checkpoints.dir
    assert checkpoints.resume() == (0, -1)
    checkpoints.write([0, 1], np.zeros((2, 3)))
    assert checkpoints.resume() == (2, 1)
    part = next(folder.glob("rows-*.npz"))
    _make(part, kind, 0)
    assert within(20, checkpoints.resume) == {"value": (0, -1)}
    _make(folder / "key.json", kind, 0)
    assert within(20, Checkpoints(tmp_path / "cache.h5", {"backbone": "x"}).resume) == {"value": (0, -1)}
