"""OpenVINO and the precision (extract.py --runtime openvino --precision): fp32 is the same cache as ONNX
Runtime's, bf16 is its own; auto chooses from what is installed and what the CPU has, and falls back in one
line; a head predicts at its cache's precision."""

import h5py
import numpy as np
import pytest

from features.cli import classify, extract, predict
from features.errors import UsageError
from features.models import openvino, runtime
from features.models.runtime import Choice
from helpers import FAST_EXTRACT, extracted, last_json, tiny_onnx_network, within

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

REAL = ["--backbone", "efficientnet_lite0", "--image-size", "64", "--json", "-q"]  # ImageNet weights, offline




def _read(path):
    with h5py.File(path, "r") as f:
        return f["embeddings"][:], dict(f.attrs)


@pytest.mark.parametrize("installed,native,asked,gpu,expected", [
    ((True, True), True, ("auto", "auto"), False, Choice("openvino", "bf16")),
    ((True, True), True, ("auto", "auto"), True, Choice("tf", "fp32")),  # a GPU: TensorFlow's
    ((True, True), True, ("auto", "fp32"), False, Choice(runtime.FP32_RUNTIME, "fp32")),
    ((True, True), True, ("onnx", "auto"), False, Choice("onnx", "fp32")),
    ((True, True), True, ("openvino", "auto"), False, Choice("openvino", "bf16")),
    ((True, True), False, ("auto", "auto"), False, Choice(runtime.FP32_RUNTIME, "fp32")),  # no native bf16
    ((True, False), True, ("auto", "auto"), False, Choice("onnx", "fp32")),  # no OpenVINO
    ((False, False), True, ("auto", "auto"), False, Choice("tf", "fp32")),  # no converter at all
    ((True, True), True, ("tf", "auto"), False, Choice("tf", "fp32")),
    ((True, True), True, ("auto", "bf16"), True, Choice("openvino", "bf16")),  # asked for: on the CPU
])
def test_the_precision_is_chosen_first_then_the_runtime(installed, native, asked, gpu, expected, monkeypatch):
    monkeypatch.setattr("features.models.onnx.available", lambda: None if installed[0] else "no onnx")
    monkeypatch.setattr(openvino, "available", lambda: None if installed[1] else "no openvino")
    monkeypatch.setattr(openvino, "native_bf16", lambda: native)
    assert runtime.choose(*asked, gpu=gpu) == expected


@pytest.mark.parametrize("asked,native,says", [
    (("onnx", "bf16"), True, "{precision} bf16: bf16 runs on OpenVINO; ONNX Runtime has no bf16 path"),
    (("tf", "bf16"), True, "give {runtime} openvino or auto, or {precision} fp32"),
    (("auto", "bf16"), False, "{precision} bf16: this CPU has no native bf16 (no AVX-512 BF16 or AMX"),
    (("openvino", "fp16"), True, "{precision} fp16: choose one of auto, fp32, bf16"),
    (("cuda", "auto"), True, "{runtime} cuda: choose one of auto, tf, onnx, openvino"),
])
def test_what_cannot_run_is_refused_by_name_before_any_work(asked, native, says, monkeypatch):
    monkeypatch.setattr(openvino, "native_bf16", lambda: native)
    with pytest.raises(UsageError) as err:
        runtime.choose(*asked)
    assert says in err.value.args[0]


def test_without_openvino_the_runtime_and_bf16_name_the_install(monkeypatch):
    monkeypatch.setattr(openvino, "available", lambda: "No module named 'openvino'")
    for asked, says in ((("openvino", "fp32"), "{runtime} openvino: OpenVINO is not installed"),
                        (("auto", "bf16"), "{precision} bf16: bf16 runs on OpenVINO, which is not installed")):
        with pytest.raises(UsageError, match="pip install openvino") as err:
            runtime.choose(*asked)
        assert says in err.value.args[0]
    assert runtime.choose("auto", "auto") == Choice("onnx", "fp32")  # auto: what is there


@pytest.mark.slow
def test_openvino_at_fp32_writes_onnx_runtimes_cache_and_keeps_its_compilation(image_folder, tmp_path, run_main):
    onnx = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--runtime", "onnx", "--precision", "fp32")
    ov = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--runtime", "openvino", "--precision", "fp32",
                  "--force")
    assert ov["cache"] == onnx["cache"] and (ov["runtime"], ov["precision"]) == ("openvino", "fp32")
    x_ov, attrs = _read(ov["cache"])
    assert attrs["runtime"] == "openvino" and attrs["precision"] == "fp32" and attrs["runtime_version"]
    assert "precision" not in attrs.get("key", {}) and not ov["cache"].endswith("-fp32.h5")
    assert ov["conversion_seconds"] == 0  # the conversion ONNX Runtime made is the one OpenVINO reads
    assert ov["compile_seconds"] > 0 and onnx["compile_seconds"] == 0
    assert list((tmp_path / "emb" / "onnx" / "openvino").iterdir())  # OpenVINO's compiled model, kept
    again = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--runtime", "onnx", "--precision", "fp32",
                     "--force")
    x_onnx = _read(again["cache"])[0]
    assert np.abs(x_ov).max() > 1 and np.abs(x_ov - x_onnx).max() < 1e-4  # real embeddings, the same within 1e-4
    assert extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--runtime", "openvino", "--precision",
                    "fp32")["cache_hit"]


@pytest.mark.slow
def test_bf16_has_its_own_cache_close_to_fp32s_and_auto_takes_it(native_bf16, image_folder, tmp_path, run_main):
    fp32 = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--precision", "fp32")
    bf16 = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--precision", "bf16")
    assert bf16["cache"] != fp32["cache"] and bf16["cache"].endswith("-bf16.h5")
    assert (bf16["runtime"], bf16["precision"]) == ("openvino", "bf16")
    (a, _), (b, attrs) = _read(fp32["cache"]), _read(bf16["cache"])
    assert attrs["precision"] == "bf16" and attrs["runtime"] == "openvino"
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.98 and np.abs(a - b).max() > 1e-3  # close, not the same
    code, out, _ = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"),
                                           *REAL[:-2]])
    assert code == 0 and out.startswith(f"cache hit: {bf16['cache']}")  # auto, on this CPU: bf16
    code, out, _ = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "b"),
                                           *REAL[:-2]])
    assert "runtime OpenVINO at bf16 (the network converted once" in out


@pytest.mark.slow
def test_a_head_on_bf16_embeddings_predicts_at_bf16(native_bf16, image_folder, tmp_path, run_main):
    cache = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--precision", "bf16")["cache"]
    code, out, _ = run_main(classify.main, ["--features", cache, "--out", str(tmp_path / "runs"), "--json", "-q",
                                            "--n-jobs", "1"])
    run = last_json(out)["run_dir"]
    from features.serve.predict import open_predictor

    predictor = open_predictor(run)
    assert predictor.runtime == "openvino"
    paths = sorted(str(p) for p in image_folder.glob("*/*"))
    rows, proba, _ = predictor.predict(paths)
    x, _ = _read(cache)
    np.testing.assert_allclose(proba, predictor.model.predict_proba(x), atol=1e-5)  # the cache's own network


@pytest.mark.slow
def test_a_bf16_head_where_bf16_cannot_run_predicts_at_fp32_with_one_warning(native_bf16, image_folder, tmp_path,
                                                                            run_main, monkeypatch, caplog):
    fp32 = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--precision", "fp32")["cache"]
    cache = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--precision", "bf16")["cache"]
    code, out, _ = run_main(classify.main, ["--features", cache, "--out", str(tmp_path / "runs"), "--json", "-q",
                                            "--n-jobs", "1"])
    run = last_json(out)["run_dir"]
    from features.serve.predict import open_predictor

    paths = sorted(str(p) for p in image_folder.glob("*/*"))
    x, _ = _read(fp32)

    def cannot(*_, **__):
        raise openvino.NoOpenVinoForm("Cannot create Foo layer: unsupported")

    compile_network = openvino.compile_network
    for why, native, compiles in (("this CPU has no native bf16", False, compile_network),
                                  ("OpenVINO cannot run efficientnet_lite0 here", True, cannot)):
        monkeypatch.setattr(openvino, "native_bf16", lambda native=native: native)
        monkeypatch.setattr(openvino, "compile_network", compiles)
        caplog.clear()
        predictor = open_predictor(run)
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warned) == 1 and warned[0].startswith(f"the head was trained on bf16 embeddings ({why}")
        assert "its backbone runs at fp32 here" in warned[0] and predictor.runtime == "onnx"
        _, proba, _ = predictor.predict(paths)
        np.testing.assert_allclose(proba, predictor.model.predict_proba(x), atol=1e-5)  # the fp32 network's


@pytest.mark.slow
def test_what_openvino_cannot_compile_falls_back_under_auto_and_is_refused_by_name(image_folder, tmp_path,
                                                                                  run_main, monkeypatch, caplog):
    def cannot(*_, **__):
        raise openvino.NoOpenVinoForm("Cannot create Foo layer: unsupported")

    caplog.set_level("INFO", "features.models.runtime")
    monkeypatch.setattr(openvino, "compile_network", cannot)
    monkeypatch.setattr(openvino, "native_bf16", lambda: True)  # auto would take bf16 on OpenVINO
    result = extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT)
    assert (result["runtime"], result["precision"]) == ("onnx", "fp32") and not result["cache"].endswith("-bf16.h5")
    assert "runtime: ONNX Runtime at fp32, as OpenVINO cannot compile efficientnet_lite0 here: Cannot create Foo" \
        in caplog.text
    code, _, err = run_main(extract.main,
                            ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"), *FAST_EXTRACT,
                                           "--runtime", "openvino", "--force"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--runtime openvino: OpenVINO cannot compile efficientnet_lite0 (Cannot create Foo layer" in err
    assert "give --runtime onnx or tf" in err
    code, _, err = run_main(extract.main,
                            ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"), *FAST_EXTRACT,
                                           "--precision", "bf16", "--force"])  # bf16 asked for: not fp32 instead
    assert code == 2 and "--precision bf16: efficientnet_lite0 cannot run on OpenVINO here" in err


@pytest.mark.slow
def test_predict_runs_a_heads_backbone_on_openvino_as_on_onnx_runtime(image_folder, tmp_path, run_main):
    cache = extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--precision", "fp32")["cache"]
    code, out, _ = run_main(classify.main, ["--features", cache, "--out", str(tmp_path / "runs"), "--json", "-q",
                                            "--n-jobs", "1"])
    run = last_json(out)["run_dir"]
    found = {}
    for name in ("onnx", "openvino"):
        code, out, err = run_main(predict.main, [run, str(image_folder), "--runtime", name, "--json", "-q"])
        assert code == 0, err
        found[name] = {p["path"]: dict(p["top"]) for p in last_json(out)["predictions"]}
    for path, top in found["onnx"].items():
        assert max(abs(top[k] - found["openvino"][path][k]) for k in top) < 1e-4


@pytest.mark.slow
def test_two_streams_give_one_streams_embeddings_in_order(image_folder, tmp_path, run_main):
    extracted(run_main, image_folder, tmp_path / "emb", *REAL, "--runtime", "onnx", "--precision", "fp32")
    from features.models.registry import resolve_backbone

    converted = runtime.prepare(resolve_backbone("efficientnet_lite0", 64), Choice("onnx"), pooling="avg", tta="none",
                                seed=0, folder=tmp_path / "emb" / "onnx", asked="onnx", build=False).converted
    images = np.random.default_rng(0).integers(0, 256, (7, 64, 64, 3)).astype(np.float32)  # an odd batch
    one = openvino.OpenVinoEmbedder(converted, "fp32", threads=2, streams=1)(images)
    two = openvino.OpenVinoEmbedder(converted, "fp32", threads=2, streams=2)
    assert two.streams == 2
    np.testing.assert_allclose(two(images), one, atol=1e-5)
    np.testing.assert_allclose(two(images[:1]), one[:1], atol=1e-5)  # fewer images than streams


def test_every_openvino_batch_is_checked_finite_and_of_the_width(tmp_path):
    from pathlib import Path

    from features.models.onnx import Converted

    model = tiny_onnx_network(tmp_path / "tiny.onnx")
    images = np.full((2, 8, 8, 3), 10, np.float32)
    for streams in (1, 2):
        embed = openvino.OpenVinoEmbedder(Converted(path=Path("tiny.onnx"), model=model, width=3), "fp32", threads=2,
                                          streams=streams)
        assert np.allclose(embed(images), 10)
        bad = images.copy()
        bad[1, 0, 0, 0] = np.nan
        with pytest.raises(UsageError, match="OpenVINO gave embeddings that are not finite .* delete it to convert"):
            embed(bad)
    wrong = openvino.OpenVinoEmbedder(Converted(path=Path("tiny.onnx"), model=model, width=1280), "fp32", threads=1)
    with pytest.raises(UsageError, match=r"embeddings of shape \(2, 3\) for 2 images"):
        wrong(images)




@pytest.mark.parametrize("planted", ["a FIFO", "a link to /dev/zero", "a folder", "a dangling link"])
def test_what_is_not_a_regular_file_in_openvinos_cache_is_removed_before_it_reads_there(planted, tmp_path, caplog):
    import os

    model = tiny_onnx_network(tmp_path / "tiny.onnx")
    cache = tmp_path / "cache"
    openvino.compile_network(model, "fp32", threads=1, cache_dir=cache)
    (bad,) = list(cache.iterdir())  # the compiled model's own blob: the file OpenVINO reads next time
    bad.unlink()
    (cache / "kept.blob").write_bytes(b"not a blob OpenVINO made")  # a regular file: OpenVINO's to judge
    {"a FIFO": lambda: os.mkfifo(bad), "a link to /dev/zero": lambda: bad.symlink_to("/dev/zero"),
     "a folder": lambda: bad.mkdir(), "a dangling link": lambda: bad.symlink_to(tmp_path / "gone")}[planted]()
    compiled = within(60, lambda: openvino.compile_network(model, "fp32", threads=1, cache_dir=cache))["value"]
    assert np.allclose(compiled(np.full((1, 8, 8, 3), 7, np.float32))[0], 7)
    assert not bad.is_fifo() and not bad.is_symlink() and not bad.is_dir() and (cache / "kept.blob").exists()
    assert "in OpenVINO's model cache is not a regular file: removed" in caplog.text


def test_a_cache_folder_that_is_a_file_or_a_link_is_not_used(tmp_path, caplog):
    model = tiny_onnx_network(tmp_path / "tiny.onnx")
    (tmp_path / "file").write_text("")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for folder in (tmp_path / "file", tmp_path / "link"):
        assert openvino.usable_cache(folder) is None
        assert "value" in within(60, lambda f=folder: openvino.compile_network(model, "fp32", threads=1, cache_dir=f))
    assert not list((tmp_path / "elsewhere").iterdir()) and "OpenVINO's model cache not used" in caplog.text


def _negated_network(path) -> bytes:
    """The tiny network's opposite: each image's mean pixel per channel, negated (cosine -1 to the tiny one's)."""
    import onnx
    from onnx import TensorProto, helper

    from features.models.onnx import OPSET

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("Neg", ["mean"], ["embedding"])], "negated",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 8, 8, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)
    return path.read_bytes()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_blob_of_another_network_in_openvinos_cache_is_dropped_and_compiled_again(precision, tmp_path, caplog):
    """Hostile pass five: the --weights none network's blob copied over the ImageNet network's, and OpenVINO
    served it (predict.py said "dandelion 0.471" where the network says "roses 0.992"). What OpenVINO compiled or
    read is run on the conversion's probe before any batch."""
    import shutil
    from pathlib import Path

    from features.models.onnx import Converted, ort_session, probe_images

    model, other = tiny_onnx_network(tmp_path / "tiny.onnx"), _negated_network(tmp_path / "negated.onnx")
    probe = ort_session(model, threads=1).run(None, {"images": probe_images(8)})[0].tolist()
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    openvino.compile_network(model, precision, threads=1, cache_dir=mine)
    openvino.compile_network(other, precision, threads=1, cache_dir=theirs)
    (blob,), (their_blob,) = list(mine.iterdir()), list(theirs.iterdir())
    shutil.copyfile(their_blob, blob)  # the other network's blob under this network's name
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    served = openvino.compile_network(model, precision, threads=1, cache_dir=mine)
    assert np.allclose(served(images)[0], -images.mean((1, 2)), rtol=0.02)  # OpenVINO serves it as it is
    shutil.copyfile(their_blob, blob)
    converted = Converted(path=Path("tiny.onnx"), model=model, width=3, probe=probe, size=8)
    embed = openvino.OpenVinoEmbedder(converted, precision, threads=1, cache_dir=mine)
    assert np.allclose(embed(images), images.mean((1, 2)), rtol=0.02)
    assert "OpenVINO's compiled network gave embeddings of the probe" in caplog.text
    assert "its model cache" in caplog.text and "is cleared and the network compiled again" in caplog.text
    # a probe that the network itself does not give (its record is not this network's): refused, not run
    wrong = Converted(path=Path("tiny.onnx"), model=model, width=3, probe=(-np.asarray(probe)).tolist(), size=8)
    with pytest.raises(openvino.NoOpenVinoForm, match="what it compiles gives embeddings of the probe"):
        openvino.OpenVinoEmbedder(wrong, precision, threads=1, cache_dir=mine)
