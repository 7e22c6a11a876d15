"""Seconds-long smoke runs of the benchmark scripts on tiny folders (not benchmarks)."""

import importlib.util
import sys
from pathlib import Path

import pytest

from features.records import runs
from helpers import make_image_folder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # as `python benchmarks/X.py` runs them: their shared module beside them


def _load(name):
    path = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_performance_benchmark_smoke_run_prints_every_target(tmp_path, capsys):
    make_image_folder(tmp_path / "pets", per_class=12)
    gpu_log = tmp_path / "gpu.log"
    gpu_log.write_text("extraction speed-up at batch 256: 1.00x")
    report = tmp_path / "BENCH.md"
    code = _load("performance").main([
        "--data-dir", str(tmp_path / "pets"), "--sections", "extraction", "resize", "heads", "accuracy", "prefix",
        "precision", "--images", "24", "--accuracy-epochs", "1",
        "--image-size", "32", "--batch-size", "4", "--rounds", "1", "--loop-images", "3", "--dct-images", "4",
        "--epochs", "1", "--unfreeze", "5", "--out", str(report), "--gpu-log", str(gpu_log)])
    out = capsys.readouterr().out
    assert code == 0
    table = out[out.index("| target"):]
    for name in ("1a extraction / compute ceiling", "1b extraction / Keras tutorial", "1c extraction / per-image",
                 "4a --cache-frozen seconds/epoch", "4b --cache-frozen test accuracy"):
        assert name in table
    text = report.read_text()
    assert "machine: " in text and "versions: " in text and "DCT-scaled decoding" in text
    assert "5-fold logreg accuracy" in text and "extraction speed-up at batch 256" in text


@pytest.mark.slow
def test_streaming_benchmark_prints_memory_passes_and_accuracy(tmp_path, capsys):
    make_image_folder(tmp_path / "root" / "pets", per_class=10)
    report = tmp_path / "BENCH.md"
    report.write_text("# kept\n")
    code = _load("streaming").main(["--rows", "3000", "6000", "--dim", "16", "--epochs", "2", "--work-dir",
                                    str(tmp_path), "--datasets", "pets", "--root", str(tmp_path / "root"),
                                    "--embeddings", str(tmp_path / "emb"), "--out", str(report)])
    out = capsys.readouterr().out
    assert code == 0
    assert "3,000 rows" in out and "6,000 rows" in out and "peak memory" in out and "2x rows:" in out
    assert "logreg streamed: peak memory" in out and "passes (C" in out and "s an epoch" in out
    assert "pets          streamed" in out and "test predictions alike" in out and "sgd" in out
    text = report.read_text()
    assert text.startswith("# kept") and "<!-- section:streaming -->" in text and "6,000 rows" in text
    assert not list(tmp_path.glob("streaming-*"))  # the synthetic caches are deleted


def test_a_benchmark_replaces_its_own_section_and_leaves_the_others(tmp_path):
    from sections import replace_section, write_printed_section

    md = tmp_path / "BENCH.md"
    md.write_text("# Benchmarks\n\nwritten by performance.py\n")
    write_printed_section(md, "a", "A", "printed", ["1", "2"])
    replace_section(md, "b", "## B\n\nold")
    write_printed_section(md, "a", "A", "printed again", ["3"])
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nwritten by performance.py\n")
    assert "printed again:\n\n```\n3\n```" in text and "1\n2" not in text
    assert text.count("<!-- section:a -->") == 1 and "## B\n\nold" in text
    assert text.index("section:a") < text.index("section:b")  # replaced where it was

