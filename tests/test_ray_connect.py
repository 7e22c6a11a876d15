"""Joining a Ray cluster: what is not a cluster, or a machine where Ray cannot start, is refused in seconds,
in one line (no local cluster is started here, unlike test_ray_engine.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from features.cli import extract
from helpers import make_image_folder, tmpfs

ROOT = Path(__file__).resolve().parents[1]
LITE = ["--backbone", "efficientnet_lite0", "--weights", "none", "--image-size", "32", "-q"]  # random weights: fast


@pytest.mark.slow
def test_a_web_server_at_the_ray_address_fails_within_seconds(tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        photos = make_image_folder(tmp_path / "pets", per_class=2)
        import time

        time.sleep(1)
        done = subprocess.run([sys.executable, "extract.py", "--engine", "ray", "--ray-address",
                               f"127.0.0.1:{port}", "--data-dir", str(photos), "--out", str(tmp_path / "e"), *LITE],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
    assert done.returncode == 2 and "no Ray cluster answers there" in done.stderr, done.stderr


def test_a_ray_address_without_the_ray_engine_is_refused(image_folder, tmp_path, capsys):
    assert extract.main(["--data-dir", str(image_folder), "--out", str(tmp_path), "--ray-address", "auto",
                         *LITE]) == 2
    assert "--ray-address auto applies to --engine ray" in capsys.readouterr().err


def test_a_read_only_home_is_named_for_a_local_ray(image_folder, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    with tmpfs(tmp_path / "home", "ro,size=1m") as home:
        monkeypatch.setenv("HOME", str(home))
        from features.extraction import ray_cluster

        with pytest.raises(Exception, match="HOME .* is not writable"):
            ray_cluster._init(__import__("ray"), None, str(tmp_path / "ray"))
