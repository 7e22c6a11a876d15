"""Fixtures: tiny real image folders made in tmp_path, and the shared datasets when present."""

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the scripts run: no cuInit error line

import numpy as np
import pytest

from features.models.openvino import native_bf16 as _REAL_NATIVE_BF16  # the real one, before any test patches it

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def last_json(out: str) -> dict:
    """The JSON object a script printed on its last line (--json)."""
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="session", autouse=True)
def _no_native_bf16():
    """``--precision auto`` is fp32 in every test, whatever this machine's CPU has: the precision is the test's
    own (a CPU with native bf16 makes auto bf16, whose embeddings are not the Keras model's). Tests of bf16 ask
    for :func:`native_bf16`. Child processes get the machine's own choice: give them ``--precision``."""
    from features.models import openvino

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openvino, "native_bf16", lambda: False)
        yield


@pytest.fixture
def native_bf16(monkeypatch):
    """This CPU's native bf16, as OpenVINO reports it (skips where OpenVINO or the instructions are missing)."""
    from features.models import openvino

    if openvino.available() is not None:
        pytest.skip(f"OpenVINO is not installed ({openvino.available()})")
    monkeypatch.setattr(openvino, "native_bf16", _REAL_NATIVE_BF16)
    if not _REAL_NATIVE_BF16():
        pytest.skip("this CPU has no native bf16 (no AVX-512 BF16 or AMX)")


@pytest.fixture
def run_main(capsys):
    """Run a script's ``main(argv)`` in this process: ``run_main(classify.main, argv)`` gives
    (exit code, stdout, stderr)."""

    def run(main, argv):
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run


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


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Two classes of 8 images each (JPEG and PNG), plus a loose README at the root."""
    root = make_image_folder(tmp_path / "pets")
    (root / "README.md").write_text("not a class")
    return root


@pytest.fixture(scope="session")
def head_runs(tmp_path_factory):
    """Photos (two classes of 12), their EfficientNet-Lite0 cache at 64 px, and a logreg, an svm and an
    sgd run folder on it: ``head_runs.photos``, ``.cache``, ``.runs[head]``. Tests copy what they change."""
    from types import SimpleNamespace

    from features.cli import classify, extract

    root = tmp_path_factory.mktemp("heads")
    photos = make_image_folder(root / "pets", per_class=12)
    assert extract.main(["--data-dir", str(photos), "--out", str(root / "emb"), "--image-size", "64", "-q"]) == 0
    cache = next((root / "emb").glob("**/*.h5"))
    runs = {}
    for head in ("logreg", "svm", "sgd"):
        assert classify.main(["--features", str(cache), "--model", head, "--n-jobs", "1", "--out",
                              str(root / "runs"), "-q"]) == 0
        runs[head] = next((root / "runs").glob(f"*-{head}"))
    return SimpleNamespace(photos=photos, cache=cache, runs=runs)


@pytest.fixture
def legacy_torch_file(monkeypatch):
    """Write a legacy (pre-1.6) PyTorch state dict without torch: ``write(path, tensors, values)``.

    ``tensors`` maps each name to (storage offset, size, stride) over one float32 storage
    holding ``values``, as a real file's tensor views do (they may lie about the storage;
    that is what the reader must refuse). Stand-in ``torch`` modules give pickle the global
    names a real file holds while it writes; they are gone again before the file is read.
    """
    import collections
    import io
    import pickle
    import struct
    import sys
    import types

    from features.models.torchfile import MAGIC_NUMBER, PROTOCOL_VERSION

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = FloatStorage, _rebuild_tensor_v2, utils

    def write(path, tensors: dict, values) -> Path:
        values = np.asarray(values, "<f4")

        class Storage:
            pass

        storage = Storage()

        class Tensor:
            def __init__(self, offset, size, stride):
                self.args = (storage, offset, size, stride, False, collections.OrderedDict())

            def __reduce__(self):
                return (_rebuild_tensor_v2, self.args)

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                return ("storage", FloatStorage, "0", "cpu", len(values)) if obj is storage else None

        header = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC_NUMBER, PROTOCOL_VERSION,
                                                                {"little_endian": True}))
        body = io.BytesIO()
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "torch", torch)
            m.setitem(sys.modules, "torch._utils", utils)
            Pickler(body, protocol=2).dump(collections.OrderedDict(
                (name, Tensor(*view)) for name, view in tensors.items()))
        Path(path).write_bytes(header + body.getvalue() + pickle.dumps(["0"], protocol=2)
                               + struct.pack("<q", len(values)) + values.tobytes())
        return Path(path)

    return write


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
