"""Fixtures: tiny real image folders made in tmp_path, and the shared datasets when present."""

import os
import socket
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


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
