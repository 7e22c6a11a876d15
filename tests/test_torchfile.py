import pickle
import struct

import numpy as np
import pytest

from features.lite import packaged_weights_path
from features.torchfile import MAGIC_NUMBER, PROTOCOL_VERSION, UnsafePickleError, load_state_dict


def _legacy_header() -> bytes:
    return b"".join(pickle.dumps(x, protocol=2) for x in
                    (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}))


def test_reads_the_packaged_lite0_state_dict():
    sd = load_state_dict(packaged_weights_path("efficientnet_lite0"))
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert all(v.dtype == np.float32 for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert np.isfinite(sd["_bn1.running_var"]).all() and (sd["_bn1.running_var"] > 0).all()


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_refuses_a_pth_that_tries_to_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(_legacy_header() + pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        load_state_dict(evil)
    assert not marker.exists()


def test_refuses_code_even_in_the_first_pickle(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(UnsafePickleError):
        load_state_dict(evil)
    assert not marker.exists()


def test_not_a_torch_file_and_truncated_file(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a legacy PyTorch file"):
        load_state_dict(junk)
    real = packaged_weights_path("efficientnet_lite0").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real[: len(real) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_state_dict(cut)


def test_strided_tensors_are_rebuilt_like_torch(tmp_path, monkeypatch):
    """A hand-written legacy file: a transposed (strided) view over a shared storage."""
    import collections
    import io
    import sys
    import types

    # Stand-ins so that pickle can write references to torch names without torch.
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch_mod.FloatStorage, utils_mod._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, "0", "cpu", 6) if obj == "STORAGE" else None

    class TensorStub:
        def __init__(self, offset, size, stride):
            self.args = ("STORAGE", offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return (_rebuild_tensor_v2, self.args)

    body = io.BytesIO()
    state = collections.OrderedDict(a=TensorStub(0, (2, 3), (3, 1)), t=TensorStub(0, (3, 2), (1, 3)),
                                    tail=TensorStub(4, (2,), (1,)))
    Pickler(body, protocol=2).dump(state)
    values = np.arange(6, dtype="<f4")
    path = tmp_path / "small.pth"
    path.write_bytes(_legacy_header() + body.getvalue() + pickle.dumps(["0"], protocol=2)
                     + struct.pack("<q", 6) + values.tobytes())
    monkeypatch.delitem(sys.modules, "torch")  # the reader must not need it
    sd = load_state_dict(path)
    np.testing.assert_array_equal(sd["a"], values.reshape(2, 3))
    np.testing.assert_array_equal(sd["t"], values.reshape(2, 3).T)
    np.testing.assert_array_equal(sd["tail"], [4, 5])


def _crafted(path, size, stride, offset=0, numel=4):
    """A legacy torch file whose one tensor claims ``size``/``stride``/``offset`` over ``numel`` floats.

    Made without torch: stand-in ``torch`` modules give pickle the global names a real
    file holds, then are removed again.
    """
    import collections
    import io
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = FloatStorage, _rebuild_tensor_v2, utils

    class Storage:
        pass

    class Tensor:
        def __reduce__(self):
            return (_rebuild_tensor_v2, (Storage(), offset, size, stride, False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, "0", "cpu", numel) if isinstance(obj, Storage) else None

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(collections.OrderedDict(w=Tensor()))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    path.write_bytes(_legacy_header() + buf.getvalue() + pickle.dumps(["0"], protocol=2)
                     + struct.pack("<q", numel) + np.arange(numel, dtype="<f4").tobytes())
    return path


def test_an_honest_crafted_file_reads():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        sd = load_state_dict(_crafted(Path(d) / "ok.pth", (2, 2), (2, 1)))
    np.testing.assert_array_equal(sd["w"], [[0, 1], [2, 3]])


@pytest.mark.parametrize("size,stride,offset", [
    ((1_000_000, 1_000_000), (1_000_000, 1), 0),  # reads far past the storage: crashed the process
    ((4,), (1,), 2),                              # the offset pushes the view past the end: heap memory
    ((2, 2), (3, 1), 0),                          # a stride that overruns by one element
    ((2,), (-1,), 1),                             # a negative stride
    ((2,), (1, 1), 0),                            # more strides than dimensions
    ((2,), ("1",), 0),                            # a stride that is not a number
])
def test_a_file_that_lies_about_its_storage_is_refused(tmp_path, size, stride, offset):
    with pytest.raises(ValueError, match="damaged|reaches element"):
        load_state_dict(_crafted(tmp_path / "lie.pth", size, stride, offset))


def test_extract_refuses_a_lying_weights_file_in_one_line(tmp_path, capsys):
    import extract
    from conftest import make_image_folder

    photos = make_image_folder(tmp_path / "photos", per_class=3)
    lie = _crafted(tmp_path / "lie.pth", (1_000_000, 1_000_000), (1_000_000, 1))
    code = extract.main(["--data-dir", str(photos), "--weights", str(lie), "--image-size", "32",
                         "--out", str(tmp_path / "emb"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--weights" in err and "reaches element" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
