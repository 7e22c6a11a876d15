"""Every script's flags, given anything: exit 0, or exit 2 with one line; never a traceback, a crash or a hang.

Hypothesis draws values a hostile user would type (numbers of every size and sign, NaN,
infinities, odd strings, text that is not valid UTF-8 as a shell passes it) for a few
flags at a time. The expensive step after all the checks (embedding, building the
network, loading a run folder) is replaced by a marker: what is tested is that no value
gets past the checks into a traceback. NUL bytes are left out: no shell can pass one.
"""

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.cli import classify, extract, finetune, predict, report
from features.serve.base import Predictor
from helpers import blobs, make_image_folder, write_cache

ODD = ["", " ", "nan", "NaN", "inf", "-inf", "1e23", "1e300", "-1e300", "-1", "0", "-0", "1", "2", "3/2", "0/1",
       "1/0", "0,0,0", "1,1,1", "nan,0.5,0.5", "70/15/15", "0.7,0.15,0.15", "all", "scale", "auto", "none",
       "imagenet", "efficientnet_lite0", "vgg19", "..", "/", "/dev/null", "/proc/self/mem", "\udcff\udcfe",
       "caf\udce9", "é", "--help", "-q", "9" * 40, "0x10", "1_000"]
VALUES = st.one_of(
    st.sampled_from(ODD),
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=10),
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Reached(Exception):
    """The checks passed and the expensive work would start here."""


def _reach(*args, **kwargs):
    raise Reached


def _run(main, argv, capsys, prog):
    start = time.monotonic()
    try:
        code = main(argv)
        argparse_exit = False
    except Reached:
        return
    except SystemExit as exc:  # argparse's own refusal: usage, then one error line
        code, argparse_exit = exc.code, True
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code in (0, 2), (argv, code, err)
    assert elapsed < 120, (argv, elapsed)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith(f"{prog}: error:"), (argv, err)
        if not argparse_exit:
            assert len(lines) == 1, (argv, err)


def _flags(names):
    return st.lists(st.tuples(st.sampled_from(names), VALUES), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("flags") / "pets", per_class=4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    X, y = blobs(n_per_class=20)
    return write_cache(tmp_path_factory.mktemp("flags") / "c.h5", X, y, ["a", "b", "c"])


DATA_FLAGS = ["--split", "--seed", "--max-per-class", "--max-pixels", "--tfds-dir"]


@SETTINGS
@given(flags=_flags(DATA_FLAGS + ["--backbone", "--weights", "--image-size", "--pooling", "--batch-size",
                                  "--shard", "--merge", "--tta"]))
def test_extract_flags(flags, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("features.extraction.run._extract", _reach)
    argv = ["--data-dir", str(photos), "--out", str(tmp_path / "emb"), "-q", *[f"{k}={v}" for k, v in flags]]
    _run(extract.main, argv, capsys, "extract.py")


@SETTINGS
@given(flags=_flags(DATA_FLAGS + ["--backbone", "--weights", "--image-size", "--unfreeze", "--binary-output",
                                  "--epochs", "--head-epochs", "--lr", "--head-lr", "--scratch-lr", "--batch-size",
                                  "--distribute",
                                  "--schedule", "--warmup-epochs", "--weight-decay", "--augment",
                                  "--label-smoothing", "--train-per-class", "--tta", "--monitor",
                                  "--patience", "--precision"]))
def test_finetune_flags(flags, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("features.train.run.build", _reach)
    argv = ["--data-dir", str(photos), "--out", str(tmp_path / "runs"), "-q", *[f"{k}={v}" for k, v in flags]]
    _run(finetune.main, argv, capsys, "finetune.py")


@SETTINGS
@given(flags=_flags(["--model", "--C", "--gamma", "--k", "--alpha", "--epochs", "--class-weight", "--cv",
                     "--n-jobs", "--seed",
                     "--embeddings-dir"]))
def test_classify_flags(flags, cache, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("features.heads.classify.classify_cache", _reach)
    monkeypatch.setattr("features.heads.classify.classify_streaming", _reach)
    argv = ["--features", str(cache), "--out", str(tmp_path / "runs"), "-q", *[f"{k}={v}" for k, v in flags]]
    _run(classify.main, argv, capsys, "classify.py")


class _Predictor(Predictor):
    class_names = ["cat", "dog"]
    run_dir = "run"
    kind = "finetune"

    def probabilities(self, paths, batch_size, tta="none"):
        return np.arange(len(paths)), np.full((len(paths), 2), 0.5)


@SETTINGS
@given(flags=_flags(["--top-k", "--batch-size", "--csv", "--tta", "--ensemble"]))
def test_predict_flags(flags, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("features.serve.predict.load_predictor", lambda run_dir, runtime="tf": _Predictor())
    argv = [str(tmp_path), str(photos / "cat"), "-q", *[f"{k}={v}" for k, v in flags]]
    _run(predict.main, argv, capsys, "predict.py")


@pytest.mark.slow
@SETTINGS
@given(flags=_flags(["--results", "--out", "--plots-dir", "--note"]))
def test_report_flags(flags, tmp_path, capsys, monkeypatch):
    from features.records import runs

    monkeypatch.chdir(tmp_path)
    runs.append_result(tmp_path / "runs", {"dataset": "pets", "backbone": "toy", "image_size": 32,
                                           "method": "frozen-features", "head": "logreg", "accuracy": 0.9,
                                           "precision_macro": 0.9, "recall_macro": 0.9, "f1_macro": 0.9,
                                           "total_seconds": 1.0, "n_test": 4,
                                           "per_class": {"cat": {"precision": 0.9}}})
    argv = ["--results", str(tmp_path / "runs"), "-q", *[f"{k}={v}" for k, v in flags]]
    _run(report.main, argv, capsys, "report.py")


@SETTINGS
@given(flags=_flags(["--select", "--max-members", "--out"]))
def test_ensemble_flags(flags, tmp_path, capsys, monkeypatch):
    from features.cli import ensemble

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("features.reports.ensemble.load_member", _reach)
    argv = [str(tmp_path / "a"), str(tmp_path / "b"), "-q", *[f"{k}={v}" for k, v in flags]]
    _run(ensemble.main, argv, capsys, "ensemble.py")


@SETTINGS
@given(flags=_flags(["--format", "--quantize", "--out"]))
def test_export_flags(flags, cache, tmp_path, capsys, monkeypatch):
    from features.cli import export

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("features.serve.export.load_exportable", _reach)
    (tmp_path / "run").mkdir(exist_ok=True)
    argv = [str(tmp_path / "run"), "-q", *[f"{k}={v}" for k, v in flags]]
    _run(export.main, argv, capsys, "export.py")
