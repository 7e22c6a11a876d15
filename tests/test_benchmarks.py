"""Seconds-long smoke runs of the benchmark scripts on tiny folders (not benchmarks)."""

import importlib.util
from pathlib import Path

from conftest import make_image_folder
from features import runs


def _load(name):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_heads_benchmark_prints_its_table(tmp_path, capsys):
    make_image_folder(tmp_path / "root" / "pets", per_class=10)
    code = _load("heads").main(["--root", str(tmp_path / "root"), "--datasets", "pets", "--heads", "logreg",
                                "knn", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "runs"),
                                "--n-jobs", "1"])
    out = capsys.readouterr().out
    assert code == 0
    table = out[out.index("test acc"):].splitlines()[1:]
    assert [line.split()[:2] for line in table] == [["pets", "logreg"], ["pets", "knn"]]
    assert len(runs.read_results(tmp_path / "runs")) == 2


def test_finetune_benchmark_prints_its_table(tmp_path, capsys):
    make_image_folder(tmp_path / "root" / "pets", per_class=10)
    code = _load("finetune").main(["--root", str(tmp_path / "root"), "--datasets", "pets", "--methods",
                                   "frozen-features", "frozen-in-graph", "--image-size", "32", "--frozen-epochs",
                                   "1", "--batch-size", "4", "--embeddings", str(tmp_path / "emb"),
                                   "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0
    table = out[out.index("s/epoch"):].splitlines()[1:]
    assert [line.split()[:3] for line in table] == [["pets", "frozen-features", "32"],
                                                     ["pets", "frozen-in-graph", "32"]]
    methods = [row["method"] for row in runs.read_results(tmp_path / "runs")]
    assert methods == ["frozen-features", "frozen-in-graph"]
