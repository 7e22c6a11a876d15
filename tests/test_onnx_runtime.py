"""The frozen pass on ONNX Runtime (extract.py --runtime): the same cache as TensorFlow's, the network
converted once and kept, rebuilt when it is not intact, and TensorFlow where the converter refuses."""

import json

import h5py
import numpy as np
import pytest

from conftest import last_json
from features.cli import extract

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

FAST = ["--backbone", "efficientnet_lite0", "--weights", "none", "--image-size", "32", "--json", "-q"]


def _extract(run_main, folder, out, *flags):
    code, stdout, err = run_main(extract.main, ["--data-dir", str(folder), "--out", str(out), *FAST, *flags])
    assert code == 0, err
    return last_json(stdout)


def _embeddings(path):
    with h5py.File(path, "r") as f:
        return f["embeddings"][:], dict(f.attrs)


@pytest.mark.slow
def test_both_runtimes_write_the_same_cache_and_hit_each_others(image_folder, tmp_path, run_main):
    onnx = _extract(run_main, image_folder, tmp_path / "a", "--runtime", "onnx")
    tf = _extract(run_main, image_folder, tmp_path / "b", "--runtime", "tf")
    assert (onnx["runtime"], tf["runtime"]) == ("onnx", "tf") and onnx["conversion_seconds"] > 0
    x_onnx, attrs = _embeddings(onnx["cache"])
    x_tf, _ = _embeddings(tf["cache"])
    assert np.abs(x_onnx - x_tf).max() < 1e-4
    assert attrs["runtime"] == "onnx" and attrs["runtime_version"]
    # a cache made by either runtime is a hit for the other: the runtime is not part of the key
    assert _extract(run_main, image_folder, tmp_path / "a", "--runtime", "tf")["cache_hit"]
    # the converted network is kept: a second extraction converts nothing
    again = _extract(run_main, image_folder, tmp_path / "a", "--runtime", "onnx", "--force")
    assert again["runtime"] == "onnx" and again["conversion_seconds"] == 0


@pytest.mark.slow
def test_auto_runs_onnx_on_a_cpu_and_says_so(image_folder, tmp_path, run_main):
    code, out, _ = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"),
                                           *FAST[:-2]])
    assert code == 0 and "runtime ONNX Runtime (the network converted once" in out


@pytest.mark.slow
def test_a_converted_network_that_is_not_intact_is_converted_again(image_folder, tmp_path, run_main):
    _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "onnx")
    model = next((tmp_path / "emb" / "onnx").glob("*.onnx"))
    model.write_bytes(model.read_bytes()[:1000])  # cut short, as by a crash of another tool
    again = _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "onnx", "--force")
    assert again["conversion_seconds"] > 0
    record = json.loads(model.with_suffix(".json").read_text())
    from features.io import file_sha256

    assert file_sha256(model) == record["sha256"] and "refused" not in record
    folder = tmp_path / "emb" / "onnx"
    assert not list(folder.glob("*.lock")) and not list(folder.glob(".*tmp"))


@pytest.mark.slow
def test_another_seed_or_size_is_another_conversion(image_folder, tmp_path, run_main):
    _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "onnx")
    _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "onnx", "--seed", "3")
    _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "onnx", "--image-size", "40")
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
    code, _, err = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"), *FAST,
                                           "--runtime", "onnx"])
    assert code == 2 and "has no ONNX form (tf2onnx: unsupported op Erfc); give --runtime tf" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.glob("emb/*/*.h5*"))
    result = _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "auto")
    assert result["runtime"] == "tf" and len(calls) == 1


def test_onnx_runtime_not_installed_is_said_before_any_work(image_folder, tmp_path, run_main, monkeypatch):
    from features.models import onnx

    monkeypatch.setattr(onnx, "available", lambda: "No module named 'onnxruntime'")
    code, _, err = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"), *FAST,
                                           "--runtime", "onnx"])
    assert code == 2 and "--runtime onnx: ONNX Runtime or tf2onnx is not installed" in err
    assert _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "auto")["runtime"] == "tf"


def test_a_cache_folder_that_cannot_hold_the_network(image_folder, tmp_path, run_main):
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "onnx").write_text("not a folder")
    code, _, err = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"), *FAST,
                                           "--runtime", "onnx"])
    assert code == 2 and "cannot hold the converted network" in err and "--runtime tf" in err
    assert _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "auto")["runtime"] == "tf"


@pytest.mark.slow
def test_on_real_photos_the_runtimes_agree_and_logreg_predicts_the_same(shared_datasets, tmp_path, run_main):
    """Lite0's ImageNet weights on 12 photos of each flowers class: embeddings within 1e-4, and logistic
    regression fitted on either cache predicts the same classes for every test photo."""
    from features.cache import read_cache
    from features.heads.classify import classify

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
    runs = {r: classify(caches[r], "logreg", fixed={"C": 1.0}, n_jobs=1, out_dir=tmp_path / f"runs-{r}")
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

    cache = _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "onnx")["cache"]
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
    from conftest import tmpfs

    with tmpfs(tmp_path / "emb" / "onnx", "size=1m") as onnx_dir:  # the converted Lite0 is 13 MB
        code, _, err = run_main(extract.main, ["--data-dir", str(image_folder), "--out", str(tmp_path / "emb"),
                                               *FAST])
        assert code == 2 and "no space left on the device while converting the network" in err, err
        assert len(err.strip().splitlines()) == 1 and "--runtime tf" in err
        assert not list(onnx_dir.glob("*.onnx")) and not list(onnx_dir.glob(".*tmp"))
        assert not list((tmp_path / "emb").glob("*/*.h5*"))
        assert _extract(run_main, image_folder, tmp_path / "emb", "--runtime", "tf")["runtime"] == "tf"
