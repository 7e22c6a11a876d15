import pickle

import numpy as np
import pytest

from features.models.lite import packaged_weights_path
from features.models.torchfile import MAGIC_NUMBER, PROTOCOL_VERSION, UnsafePickleError, load_state_dict


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


def test_strided_tensors_are_rebuilt_like_torch(tmp_path, legacy_torch_file):
    """A hand-written legacy file: a transposed (strided) view over a shared storage."""
    import sys

    values = np.arange(6, dtype="<f4")
    path = legacy_torch_file(tmp_path / "small.pth", {"a": (0, (2, 3), (3, 1)), "t": (0, (3, 2), (1, 3)),
                                                       "tail": (4, (2,), (1,))}, values)
    assert "torch" not in sys.modules  # the reader must not need it
    sd = load_state_dict(path)
    np.testing.assert_array_equal(sd["a"], values.reshape(2, 3))
    np.testing.assert_array_equal(sd["t"], values.reshape(2, 3).T)
    np.testing.assert_array_equal(sd["tail"], [4, 5])


def _crafted(write, path, size, stride, offset=0, numel=4):
    """A legacy torch file whose one tensor claims ``size``/``stride``/``offset`` over ``numel`` floats."""
    return write(path, {"w": (offset, size, stride)}, np.arange(numel))


def test_an_honest_crafted_file_reads(tmp_path, legacy_torch_file):
    sd = load_state_dict(_crafted(legacy_torch_file, tmp_path / "ok.pth", (2, 2), (2, 1)))
    np.testing.assert_array_equal(sd["w"], [[0, 1], [2, 3]])


@pytest.mark.parametrize("size,stride,offset", [
    ((1_000_000, 1_000_000), (1_000_000, 1), 0),  # reads far past the storage: crashed the process
    ((4,), (1,), 2),                              # the offset pushes the view past the end: heap memory
    ((2, 2), (3, 1), 0),                          # a stride that overruns by one element
    ((2,), (-1,), 1),                             # a negative stride
    ((2,), (1, 1), 0),                            # more strides than dimensions
    ((2,), ("1",), 0),                            # a stride that is not a number
])
def test_a_file_that_lies_about_its_storage_is_refused(tmp_path, size, stride, offset, legacy_torch_file):
    with pytest.raises(ValueError, match="damaged|reaches element"):
        load_state_dict(_crafted(legacy_torch_file, tmp_path / "lie.pth", size, stride, offset))


def test_extract_refuses_a_lying_weights_file_in_one_line(tmp_path, capsys, legacy_torch_file):
    from features.cli import extract
    from helpers import make_image_folder

    photos = make_image_folder(tmp_path / "photos", per_class=3)
    lie = _crafted(legacy_torch_file, tmp_path / "lie.pth", (1_000_000, 1_000_000), (1_000_000, 1))
    code = extract.main(["--data-dir", str(photos), "--weights", str(lie), "--image-size", "32",
                         "--out", str(tmp_path / "emb"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--weights" in err and "reaches element" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
