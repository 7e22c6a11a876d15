"""The frozen pass on ONNX Runtime (extract.py --runtime): the same cache as TensorFlow's, the network
converted once and kept, rebuilt when it is not intact, and TensorFlow where the converter refuses."""

import json

import h5py
import numpy as np
import pytest

from features.cli import extract
from helpers import FAST_EXTRACT, extracted, last_json, tiny_onnx_network

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")





def _embeddings(path):
    with h5py.File(path, "r") as f:
        return f["embeddings"][:], dict(f.attrs)


@pytest.mark.slow
def test_both_runtimes_write_the_same_cache_and_hit_each_others(image_folder, tmp_path, run_main):
    onnx = extracted(run_main, image_folder, tmp_path / "a", *FAST_EXTRACT, "--runtime", "onnx")
    tf = extracted(run_main, image_folder, tmp_path / "b", *FAST_EXTRACT, "--runtime", "tf")
    assert (onnx["runtime"], tf["runtime"]) == ("onnx", "tf") and onnx["conversion_seconds"] > 0
    x_onnx, attrs = _embeddings(onnx["cache"])
    x_tf, _ = _embeddings(tf["cache"])
    assert np.abs(x_onnx - x_tf).max() < 1e-4
    assert attrs["runtime"] == "onnx" and attrs["runtime_version"]
    # a cache made by either runtime is a hit for the other: the runtime is not part of the key
    assert extracted(run_main, image_folder, tmp_path / "a", *FAST_EXTRACT, "--runtime", "tf")["cache_hit"]
    # the converted network is kept: a second extraction converts nothing
    again = extracted(run_main, image_folder, tmp_path / "a", *FAST_EXTRACT, "--runtime", "onnx", "--force")
    assert again["runtime"] == "onnx" and again["conversion_seconds"] == 0


@pytest.mark.slow
def test_auto_runs_onnx_on_a_cpu_and_says_so(image_folder, tmp_path, run_main):
    code, out, _ = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"),
                                           *FAST_EXTRACT[:-2]])
    assert code == 0 and "runtime ONNX Runtime at fp32 (the network converted once" in out


@pytest.mark.slow
def test_a_converted_network_that_is_not_intact_is_converted_again(image_folder, tmp_path, run_main):
    extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "onnx")
    model = next((tmp_path / "emb" / "onnx").glob("*.onnx"))
    model.write_bytes(model.read_bytes()[:1000])  # cut short, as by a crash of another tool
    again = extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "onnx", "--force")
    assert again["conversion_seconds"] > 0
    record = json.loads(model.with_suffix(".json").read_text())
    from features.io import file_sha256

    assert file_sha256(model) == record["sha256"] and "refused" not in record
    folder = tmp_path / "emb" / "onnx"
    assert not list(folder.glob("*.lock")) and not list(folder.glob(".*tmp"))


@pytest.mark.slow
def test_another_seed_or_size_is_another_conversion(image_folder, tmp_path, run_main):
    extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "onnx")
    extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "onnx", "--seed", "3")
    extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "onnx", "--image-size", "40")
    assert len(list((tmp_path / "emb" / "onnx").glob("*.onnx"))) == 3


@pytest.mark.slow
def test_a_network_the_converter_refuses(image_folder, tmp_path, run_main, monkeypatch):
    """--runtime onnx refuses in one line naming the runtime that works; auto runs TensorFlow, and the refusal
    is remembered (the next run does not try again)."""
    import tf2onnx

    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise ValueError("tf2onnx: unsupported op Erfc")

    monkeypatch.setattr(tf2onnx.convert, "from_function", refuse)
    code, _, err = run_main(extract.main,
                            ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"), *FAST_EXTRACT,
                                           "--runtime", "onnx"])
    assert code == 2 and "has no ONNX form (tf2onnx: unsupported op Erfc); give --runtime tf" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.glob("emb/*/*.h5*"))
    result = extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "auto")
    assert result["runtime"] == "tf" and len(calls) == 1


def test_onnx_runtime_not_installed_is_said_before_any_work(image_folder, tmp_path, run_main, monkeypatch):
    from features.models import onnx

    monkeypatch.setattr(onnx, "available", lambda: "No module named 'onnxruntime'")
    code, _, err = run_main(extract.main,
                            ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"), *FAST_EXTRACT,
                                           "--runtime", "onnx"])
    assert code == 2 and "--runtime onnx: ONNX Runtime or tf2onnx is not installed" in err
    assert extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "auto")["runtime"] == "tf"


def test_a_cache_folder_that_cannot_hold_the_network(image_folder, tmp_path, run_main):
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "onnx").write_text("not a folder")
    code, _, err = run_main(extract.main,
                            ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"), *FAST_EXTRACT,
                                           "--runtime", "onnx"])
    assert code == 2 and "cannot hold the converted network" in err and "--runtime tf" in err
    assert extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "auto")["runtime"] == "tf"


@pytest.mark.slow
def test_on_real_photos_the_runtimes_agree_and_logreg_predicts_the_same(shared_datasets, tmp_path, run_main):
    """Lite0's ImageNet weights on 12 photos of each flowers class: embeddings within 1e-4, and logistic
    regression fitted on either cache predicts the same classes for every test photo."""
    from features.cache import read_cache
    from features.heads.classify import classify_cache

    folder = tmp_path / "flowers"
    for c in sorted(p.name for p in (shared_datasets / "flowers").iterdir() if p.is_dir()):
        (folder / c).mkdir(parents=True)
        for photo in sorted((shared_datasets / "flowers" / c).iterdir())[:12]:
            (folder / c / photo.name).symlink_to(photo)
    caches = {}
    for runtime in ("onnx", "tf"):
        code, out, err = run_main(extract.main, ["--data-dir", str(folder), "--out", str(tmp_path / runtime),
                                                 "--runtime", runtime, "--json", "-q"])
        assert code == 0, err
        caches[runtime] = read_cache(last_json(out)["cache"])
    assert np.abs(caches["onnx"].embeddings - caches["tf"].embeddings).max() < 1e-4
    runs = {r: classify_cache(caches[r], "logreg", fixed={"C": 1.0}, n_jobs=1, out_dir=tmp_path / f"runs-{r}")
            for r in caches}
    predicted = {r: (tmp_path / f"runs-{r}").glob("*/predictions.csv") for r in runs}
    lines = {r: next(p).read_text().splitlines() for r, p in predicted.items()}
    pred = {r: [line.split(",")[:3] for line in lines[r]] for r in lines}
    assert pred["onnx"] == pred["tf"]


@pytest.mark.slow
def test_predict_runs_a_heads_backbone_on_either_runtime_alike(image_folder, tmp_path, run_main):
    """predict.py on a classify.py run: ONNX Runtime reuses the network extraction converted (no new file), and
    gives TensorFlow's probabilities within 1e-4."""
    from features.cli import classify, predict

    cache = extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "onnx")["cache"]
    code, out, err = run_main(classify.main, ["--features", cache, "--out", str(tmp_path / "runs"), "--json",
                                              "-q", "--n-jobs", "1", "--C", "1"])
    assert code == 0, err
    run = last_json(out)["run_dir"]
    converted = sorted((tmp_path / "emb" / "onnx").iterdir())
    csv = {}
    for runtime in ("onnx", "tf"):
        code, _, err = run_main(predict.main, [run, str(image_folder), "--runtime", runtime, "--csv",
                                               str(tmp_path / f"{runtime}.csv"), "-q"])
        assert code == 0, err
        csv[runtime] = np.loadtxt(tmp_path / f"{runtime}.csv", delimiter=",", skiprows=1, usecols=(2, 3))
    assert sorted((tmp_path / "emb" / "onnx").iterdir()) == converted
    assert np.abs(csv["onnx"] - csv["tf"]).max() < 1e-4
    from features.serve.predict import open_predictor

    assert open_predictor(run, runtime="onnx").runtime == "onnx" and open_predictor(run, runtime="tf").runtime == "tf"


@pytest.mark.slow
def test_a_full_disk_while_converting_ends_in_one_line_and_leaves_nothing(image_folder, tmp_path, run_main):
    from helpers import tmpfs

    with tmpfs(tmp_path / "emb" / "onnx", "size=1m") as onnx_dir:  # the converted Lite0 is 13 MB
        code, _, err = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"),
                                               *FAST_EXTRACT])
        assert code == 2 and "no space left on the device while converting the network" in err, err
        assert len(err.strip().splitlines()) == 1 and "--runtime tf" in err
        assert not list(onnx_dir.glob("*.onnx")) and not list(onnx_dir.glob(".*tmp"))
        assert not list((tmp_path / "emb").glob("*/*.h5*"))
        assert extracted(run_main, image_folder, tmp_path / "emb", *FAST_EXTRACT, "--runtime", "tf")["runtime"] == "tf"


# --- a converted network is proved to be the backbone's before it embeds anything --------------------------

@pytest.fixture(scope="module")
def conversions(tmp_path_factory):
    """Lite0 (random, 32 px) converted with seed 0 and with seed 3: two networks of the same shape."""
    from types import SimpleNamespace

    from features.models.registry import resolve_backbone
    from helpers import make_image_folder

    root = tmp_path_factory.mktemp("conversions")
    photos = make_image_folder(root / "pets")
    models = {}
    for seed in (0, 3):
        out = root / f"seed{seed}"
        assert extract.main(["--data-dir", str(photos), "--out", str(out), *FAST_EXTRACT[:-2], "-q", "--runtime",
                             "onnx",
                             "--seed", str(seed)]) == 0
        models[seed] = next((out / "onnx").glob("*.onnx"))
    return SimpleNamespace(photos=photos, models=models, backbone=resolve_backbone("efficientnet_lite0", 32, "none"))


def _copy(conversions, tmp_path, seed=0):
    import shutil

    model = conversions.models[seed]
    (tmp_path / "onnx").mkdir(exist_ok=True)
    for f in (model, model.with_suffix(".json")):
        shutil.copy(f, tmp_path / "onnx" / f.name)
    copy = tmp_path / "onnx" / model.name
    return copy, json.loads(copy.with_suffix(".json").read_text())


def _link(path, target):
    path.unlink()
    path.symlink_to(target)


def _substitute(conversions, path, record):
    """Another network of the same shape put in its place, the record's size and checksum rewritten to match."""
    from features.io import file_sha256

    other = conversions.models[3].read_bytes()
    path.write_bytes(other)
    record.update(sha256=file_sha256(path), bytes=len(other))


DAMAGES = {
    "a link to /dev/zero": (lambda c, path, record: _link(path, "/dev/zero"), "not a regular file but a device"),
    "a link to /dev/urandom": (lambda c, path, record: _link(path, "/dev/urandom"), "not a regular file but a device"),
    "a FIFO": (lambda c, path, record: (path.unlink(), __import__("os").mkfifo(path)), "a FIFO"),
    "longer than its record says": (lambda c, path, record: path.write_bytes(path.read_bytes() + b"\0" * 4096),
                                    "more than the"),
    "another network, its checksum rewritten": (_substitute, "embeddings of the probe are off by up to"),
    "a probe that is not the network's": (lambda c, path, record: record["probe"][0].__setitem__(0, 1e3),
                                          "embeddings of the probe are off by up to"),
    "a probe of NaN": (lambda c, path, record: record["probe"][1].__setitem__(5, float("nan")), "probe is not finite"),
    "a probe of another shape": (lambda c, path, record: record["probe"].pop(), "for the probe, not"),
    "another width in its record": (lambda c, path, record: record.update(width=7), "its record gives width 7"),
    "no size in its record": (lambda c, path, record: record.pop("bytes"), "does not give the file's size"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_converted_network_that_is_not_its_records_is_refused_on_opening(conversions, tmp_path, damage):
    """Each way a conversion can differ from its record ends in NotIntact (then: converted again), in a bounded
    read: a device or a FIFO is never read, nor opened for waiting."""
    from features.models.onnx import NotIntact, load_network

    path, record = _copy(conversions, tmp_path)
    assert load_network(path, record, conversions.backbone).model == path.read_bytes()  # intact as copied
    make, says = DAMAGES[damage]
    make(conversions, path, record)
    with pytest.raises(NotIntact, match=says):
        load_network(path, record, conversions.backbone)


@pytest.mark.slow
def test_a_network_of_another_input_size_or_width_is_not_the_backbones(conversions):
    from features.models.onnx import NotIntact, check_network

    model = conversions.models[0].read_bytes()
    probe = json.loads(conversions.models[0].with_suffix(".json").read_text())["probe"]
    with pytest.raises(NotIntact, match="not one float input of 40x40x3 images"):
        check_network(model, 40, width=1280, probe=probe)
    with pytest.raises(NotIntact, match="not embeddings of width 1000|for the probe, not"):
        check_network(model, 32, width=1000, probe=np.zeros((2, 1000)))
    with pytest.raises(NotIntact, match="ONNX Runtime cannot load it"):
        check_network(b"not a network", 32, width=1280, probe=probe)


@pytest.mark.slow
def test_a_record_that_is_a_device_reads_as_no_record(conversions, tmp_path):
    from features.models.onnx import _record

    path, _ = _copy(conversions, tmp_path)
    assert _record(path) is not None
    _link(path.with_suffix(".json"), "/dev/zero")
    assert _record(path) is None


def test_every_batch_is_checked_finite_and_of_the_width(tmp_path):
    from features.errors import UsageError
    from features.models.onnx import OnnxEmbedder

    model = tiny_onnx_network(tmp_path / "tiny.onnx")
    images = np.full((2, 8, 8, 3), 10, np.float32)
    assert np.allclose(OnnxEmbedder(model, 1, width=3)(images), 10)
    images[1, 0, 0, 0] = np.nan
    with pytest.raises(UsageError, match="gave embeddings that are not finite .* delete it to convert it again"):
        OnnxEmbedder(model, 1, width=3, name="tiny.onnx")(images)
    with pytest.raises(UsageError, match=r"embeddings of shape \(2, 3\) for 2 images"):
        OnnxEmbedder(model, 1, width=1280)(np.zeros((2, 8, 8, 3), np.float32))


@pytest.mark.slow
def test_a_conversion_linked_to_dev_zero_is_converted_again_byextracted(conversions, tmp_path):
    """The hostile user's reproduction, as a user runs it: `extract.py --force` with the .onnx a link to /dev/zero
    and a killed conversion's temporary file beside it finishes (it hung at 100% CPU), converts again, and leaves
    no lock and no temporary file. Run in a child process with a deadline, so a regression fails, not hangs."""
    import shutil
    import subprocess
    import sys

    out = tmp_path / "emb"
    shutil.copytree(conversions.models[0].parent.parent, out)
    model = next((out / "onnx").glob("*.onnx"))
    _link(model, "/dev/zero")
    left = out / "onnx" / f".{model.name}.999999999.tmp"  # a pid no process has: a killed conversion's
    left.write_bytes(b"\0" * 1000)
    run = subprocess.run([sys.executable, "extract.py", "--data-dir", str(conversions.photos), "--out", str(out),
                          *FAST_EXTRACT, "--runtime", "onnx", "--force"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert last_json(run.stdout)["conversion_seconds"] > 0
    assert "is not the converted network its record describes (not a regular file but a device)" in run.stderr
    assert model.is_file() and not model.is_symlink() and not left.exists()
    assert not list((out / "onnx").glob("*.lock")) and not list((out / "onnx").glob(".*tmp"))
    from features.models.onnx import load_network

    load_network(model, json.loads(model.with_suffix(".json").read_text()), conversions.backbone)


@pytest.mark.slow
def test_predict_proves_the_network_it_runs(conversions, tmp_path, run_main, monkeypatch):
    """predict.py's ONNX path goes through the same proof: a substituted network is converted again, never run."""
    from features.models import onnx

    path, record = _copy(conversions, tmp_path)
    _substitute(conversions, path, record)
    path.with_suffix(".json").write_text(json.dumps(record))
    calls = []
    monkeypatch.setattr(onnx, "_convert", lambda *a, **k: calls.append(1) or ({"refused": "stopped here"}, b""))
    with pytest.raises(onnx.NoOnnxForm, match="stopped here"):
        onnx.convert(conversions.backbone, pooling="avg", tta="none", seed=0, folder=path.parent)
    assert calls == [1]
