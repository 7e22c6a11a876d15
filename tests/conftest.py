"""Fixtures: tiny real image folders made in tmp_path, and the shared datasets when present."""

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the scripts run: no cuInit error line

import numpy as np
import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def last_json(out: str) -> dict:
    """The JSON object a script printed on its last line (--json)."""
    return json.loads(out.strip().splitlines()[-1])


def write_image(path: Path, seed: int, size=(24, 32), fmt=None) -> Path:
    """A small random-but-structured RGB image (JPEG, PNG, BMP or GIF by extension)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    pixels = np.clip(base + rng.integers(-20, 20, (*size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=8, exts=(".jpg", ".png")) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"img{i}{exts[i % len(exts)]}", seed=100 * c + i)
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Two classes of 8 images each (JPEG and PNG), plus a loose README at the root."""
    root = make_image_folder(tmp_path / "pets")
    (root / "README.md").write_text("not a class")
    return root


@pytest.fixture
def offline(monkeypatch):
    """No network: every new connection fails the way it does on a machine without one."""

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "flowers").is_dir():
        pytest.skip(f"{SHARED_DATASETS} is absent (only the project's own machines have it)")
    return SHARED_DATASETS


def write_cache(path: Path, X, y, class_names, splits=None, ids=None, attrs=None, seed=0) -> Path:
    """A feature cache written by the store module, from arrays (synthetic embeddings)."""
    from features import store
    from features.data import stratified_split

    X, y = np.asarray(X, np.float32), np.asarray(y)
    splits = stratified_split(y, (0.7, 0.15, 0.15), seed) if splits is None else np.asarray(splits)
    ids = [f"{class_names[label]}/{n}.jpg" for n, label in enumerate(y)] if ids is None else ids
    with store.CacheWriter(path, X.shape[1], class_names) as w:
        w.append(X, y, ids, np.arange(len(y)), splits)
        w.finish({"dataset": "synthetic", "backbone": "toy", "image_size": 8, "pooling": "avg",
                  "weights": "none", "weights_sha256": "", "seed": seed, "split": [0.7, 0.15, 0.15],
                  "class_names": class_names, "seconds": 1.5, "images_per_second": 100.0,
                  "fingerprint": "f", **(attrs or {})})
    return path


def blobs(n_per_class=60, classes=3, dim=16, spread=0.5, seed=0):
    """Well-separated Gaussian blobs: an easy, real classification problem."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + rng.normal(0, spread, (len(y), dim)), y


@contextmanager
def tmpfs(folder: Path, options: str):
    """A small tmpfs mounted at ``folder`` (made here), where the test may mount one (root); else a skip."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; the injected-ENOSPC tests cover the same code")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Write into ``folder`` until its device is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
