"""The tests' shared helpers (fixtures are in conftest.py): tiny real photos and caches, a script's last JSON
line, a small ONNX network, a full disk, and an extraction paused at its first checkpoint."""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# extract.py on random weights at 32 px, its result on the last line: fast, offline
FAST_EXTRACT = ["--backbone", "efficientnet_lite0", "--weights", "none", "--image-size", "32", "--json", "-q"]


def last_json(out: str) -> dict:
    """The JSON object a script printed on its last line (--json)."""
    return json.loads(out.strip().splitlines()[-1])


def extracted(run_main, folder, out, *flags) -> dict:
    """``extract.py --data-dir FOLDER --out OUT FLAGS`` in this process (``run_main``), which must succeed: its
    last line (give ``--json``)."""
    from features.cli import extract

    code, stdout, err = run_main(extract.main, ["--data-dir", str(folder), "--out", str(out), *flags])
    assert code == 0, err
    return last_json(stdout)


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


def tiny_onnx_network(path) -> bytes:
    """A graph that averages each image's pixels per channel: (n, s, s, 3) -> (n, 3)."""
    import onnx
    from onnx import TensorProto, helper

    from features.models.onnx import OPSET

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["embedding"], axes=[1, 2], keepdims=0)], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 8, 8, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)
    return path.read_bytes()


def write_cache(path: Path, X, y, class_names, splits=None, ids=None, attrs=None, seed=0) -> Path:
    """A feature cache written by the store module, from arrays (synthetic embeddings)."""
    from features import cache as store
    from features.data import stratified_split

    X, y = np.asarray(X, np.float32), np.asarray(y)
    splits = stratified_split(y, (0.7, 0.15, 0.15), seed) if splits is None else np.asarray(splits)
    ids = [f"{class_names[label]}/{n}.jpg" for n, label in enumerate(y)] if ids is None else ids
    with store.CacheWriter(path, X.shape[1], class_names) as w:
        w.append(X, y, ids=ids, index=np.arange(len(y)), splits=splits)
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


# A script run in a child process that stops at its first checkpoint, written whole, until the test acts: the
# interruption lands where the test says, never at a moment it hopes for (the run cannot finish first).
_PAUSED = """
import faulthandler, signal, sys, time
from pathlib import Path
faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it is, should it not end when told (exit_code)
# Ctrl-C as in a terminal: started with SIGINT ignored (_SIGINT_IGNORED), Python installs no handler of its own
signal.signal(signal.SIGINT, signal.default_int_handler)
from features.cache import Checkpoints
from features.cli import extract

real = Checkpoints.write

def write(self, *args, **kwargs):
    real(self, *args, **kwargs)
    Path(sys.argv[1]).write_text("checkpointed")
    time.sleep(3600)  # Ctrl-C lands here as KeyboardInterrupt, kill -9 ends the process here

Checkpoints.write = write
sys.exit(extract.main(sys.argv[2:]))
"""


# The child starts with SIGINT ignored, as every job a non-interactive shell puts in the background does (CI,
# `nohup`, `cmd &` in a script): a child that did not restore Python's handler would never see Ctrl-C. Made the
# test's own condition here, so the test does not depend on how pytest itself was started.
_SIGINT_IGNORED = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.executable, " \
                  "[sys.executable, *sys.argv[1:]])"


@contextmanager
def paused_extraction(argv, tmp_path, timeout=300):
    """``extract.py ARGV`` in a child process, yielded once its first checkpoint is on disk and it waits there.

    The caller sends the signal and waits; a child still alive at the end is killed."""
    import subprocess
    import sys
    import time

    marker = tmp_path / "paused.marker"
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_IGNORED, "-c", _PAUSED, str(marker), *argv],
                            cwd=Path(__file__).parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the extraction ended before its first checkpoint: {proc.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint within {timeout} s")
            time.sleep(0.05)
        marker.unlink()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(60)


def exit_code(proc, timeout: float) -> int:
    """``proc``'s exit code once it ends; if it has not ended within ``timeout`` seconds, the test fails with
    where each of its threads was (Python's stacks from faulthandler, the kernel's state of every thread)."""
    import signal
    import subprocess
    import time

    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    tasks = []
    for task in sorted(Path(f"/proc/{proc.pid}/task").glob("*")):
        try:
            stat = (task / "stat").read_text()
            tasks.append(f"{stat[stat.index('(') + 1:stat.rindex(')')]} {stat[stat.rindex(')') + 2]} "
                         f"{(task / 'wchan').read_text()}")
        except OSError:
            pass
    proc.send_signal(signal.SIGUSR1)
    time.sleep(5)
    proc.kill()
    _, err = proc.communicate(timeout=60)
    pytest.fail(f"still running {timeout} s after it was told to stop; its threads (name, state, wait): "
                f"{'; '.join(tasks)}\nits stderr, last 8000 characters:\n{err[-8000:]}")


def within(seconds, call) -> dict:
    """Run ``call`` in a daemon thread: ``{"value": what it returned}`` or ``{"error": what it raised}``, or a
    failure if it is still running after ``seconds`` (a reader that reads /dev/zero to its end never returns: the
    test fails, it does not hang)."""
    import threading

    box = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still reading after {seconds} s"
    return box


COLOURS = {"blue": (40, 60, 220), "red": (220, 40, 40)}


def colour_photo(path: Path, colour, seed: int, size=(40, 40)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (*size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def colour_run(root: Path, *, planted: int = 3):
    """Red and blue photos (``planted`` blue ones filed under red), their cache (Lite0, random weights, 32 px) and a
    logreg run on it: ``(photos, cache, run folder, planted ids)``."""
    photos = root / "photos"
    for k, (name, colour) in enumerate(COLOURS.items()):
        for i in range(20):
            colour_photo(photos / name / f"{name}{i}.png", colour, seed=100 * k + i)
    wrong = [f"red/planted{i}.png" for i in range(planted)]
    for i, photo_id in enumerate(wrong):
        colour_photo(photos / photo_id, COLOURS["blue"], seed=500 + i)
    from features.cli import classify, extract

    assert extract.main(["--data-dir", str(photos), "--out", str(root / "emb"), "--backbone", "efficientnet_lite0",
                         "--weights", "none", "--image-size", "32", "-q"]) == 0
    cache = next((root / "emb").glob("**/*.h5"))
    assert classify.main(["--features", str(cache), "--out", str(root / "runs"), "--n-jobs", "1", "-q"]) == 0
    return photos, cache, next((root / "runs").glob("*-logreg")), wrong


def classified_with_corrections(run_main, cache, corrections, *, out) -> dict:
    """``classify.py --features CACHE --corrections FILE`` in this process, which must succeed: its --json line."""
    from features.cli import classify

    code, stdout, err = run_main(classify.main, ["--features", str(cache), "--out", str(out), "--n-jobs", "1",
                                                 "--corrections", str(corrections), "--json", "-q"])
    assert code == 0, err
    return last_json(stdout)
