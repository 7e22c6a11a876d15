"""Run folders and the one results table every script appends to.

Layout under the outputs folder (default ``runs/``)::

    runs/results.jsonl                 one JSON object per run (the report reads only this)
    runs/<time>-<dataset>-<backbone>-<method>/   a run folder: config.json, metrics.json, ...

A run folder is built under a hidden temporary name and renamed when everything in it is
written, so a folder under its final name is complete. Rows are appended to the table
with a single ``write`` on a file opened in append mode, so concurrent runs do not
interleave their lines.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

RESULTS_FILE = "results.jsonl"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class RunFolder:
    """Where a run writes (``path``, temporary) and where it ends up (``final``)."""

    def __init__(self, path: Path, final: Path):
        self.path, self.final = path, final


@contextmanager
def run_folder(out_dir, *parts: str):
    """Yield a :class:`RunFolder`; on success ``path`` is renamed to ``final``,
    ``out_dir/<time>-<parts>``. On an error the temporary folder is removed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "-".join([_now().strftime("%Y%m%d-%H%M%S"), *(p.replace("/", "_") for p in parts if p)])
    final = out_dir / stem
    n = 1
    while final.exists():
        n += 1
        final = out_dir / f"{stem}-{n}"
    tmp = out_dir / f".{final.name}.{os.getpid()}.partial"
    tmp.mkdir()
    holder = RunFolder(tmp, final)
    try:
        yield holder
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path, obj) -> None:
    """Write JSON under a temporary name, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def append_result(out_dir, row: dict) -> Path:
    """Append one row (with the time) to the results table and return its path."""
    path = Path(out_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": _now().isoformat(timespec="seconds"), **row}, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return path


def read_results(out_dir) -> list[dict]:
    """Every row of the results table, oldest first (empty if there is none)."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
