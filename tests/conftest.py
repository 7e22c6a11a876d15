"""Fixtures: tiny real image folders made in tmp_path, and the shared datasets when present (the helpers they
use, and the tests import, are in helpers.py)."""

import os
import socket
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the scripts run: no cuInit error line

import numpy as np
import pytest

from features.models.openvino import native_bf16 as _REAL_NATIVE_BF16  # the real one, before any test patches it
from helpers import SHARED_DATASETS, make_image_folder


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


@pytest.fixture(scope="session")
def onnx_export(head_runs, tmp_path_factory) -> Path:
    """``head_runs``' logreg run exported to ONNX: the export's folder. Tests copy what they change."""
    from features.cli import export

    out = tmp_path_factory.mktemp("onnx") / "model"
    assert export.main([str(head_runs.runs["logreg"]), "--format", "onnx", "--out", str(out), "-q"]) == 0
    return out


@pytest.fixture(scope="session")
def pets(tmp_path_factory) -> Path:
    """Two classes of 10 photos each: what the fine-tuning tests train on. A test that adds a file removes it."""
    return make_image_folder(tmp_path_factory.mktemp("data") / "pets", per_class=10)


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


