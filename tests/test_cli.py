"""What a new user sees: messages in their own terms, help that states each default once, a quiet start."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features import device
from features.cli import classify, common, ensemble, export, extract, finetune, predict, report
from features.errors import UsageError
from features.train.config import TrainConfig, check_settings
from helpers import make_image_folder

ROOT = Path(__file__).resolve().parents[1]


def test_an_api_user_reads_parameters_a_command_line_user_flags():
    error = UsageError("{image_size} 16: too small; run again with {force=True}, {augment=none} and {weights=PATH}")
    assert str(error) == "image_size 16: too small; run again with force=True, augment=none and weights=PATH"
    flag = common.flag_renderer(finetune.build_parser())
    assert error.render(flag) == ("--image-size 16: too small; run again with --force, --no-augment "
                                  "and --weights PATH")


def test_a_library_check_speaks_the_callers_language(capsys):
    with pytest.raises(UsageError) as err:
        check_settings(TrainConfig(cache_frozen=True))
    assert str(err.value).startswith("cache_frozen=True needs augment=none")
    assert finetune.main(["--cache-frozen", "--data-dir", "nowhere"]) == 2
    assert "finetune.py: error: --cache-frozen needs --no-augment" in capsys.readouterr().err


def test_flags_of_another_script_and_positionals_render_as_flags():
    flag = common.flag_renderer(predict.build_parser())
    assert UsageError("{run_dir} is empty").render(flag) == "RUN_DIR is empty"
    assert UsageError("use {max_pixels}").render(flag) == "use --max-pixels"
    assert UsageError("{head} forest: unknown").render(common.flag_renderer(classify.build_parser())) == \
        "--model forest: unknown"


@pytest.mark.parametrize("script", [extract, classify, finetune, predict, report, export, ensemble])
def test_help_states_each_default_once_and_never_for_a_switch(script):
    text = script.build_parser().format_help()
    assert "(default: True)" not in text and "(default: False)" not in text and "(default: None)" not in text
    for block in text.split("\n  -")[1:]:
        assert block.count("(default") <= 1, block


def test_finetune_help_is_right_about_augmentation_and_size():
    text = " ".join(finetune.build_parser().format_help().split())
    assert "--no-augment the same as --augment none: no random changes of the training images --cache-frozen" in text
    assert "input size (default: the backbone's own) --unfreeze" in text
    assert "--split SPLIT train,val,test fractions of the stratified split made where the source has none " \
           "(default: 0.7,0.15,0.15)" in text


@pytest.mark.slow
def test_a_script_run_prints_no_native_tensorflow_lines(tmp_path):
    photos = make_image_folder(tmp_path / "photos", per_class=4)
    proc = subprocess.run([sys.executable, "extract.py", "--data-dir", str(photos), "--weights", "none",
                           "--image-size", "32", "--out", str(tmp_path / "emb"), "-q"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert proc.returncode == 0, proc.stderr
    native = [line for line in proc.stderr.splitlines()
              if line[:5] in ("I0000", "W0000", "E0000") or "absl::InitializeLog" in line or "cuInit" in line]
    assert not native, proc.stderr


@pytest.mark.slow
def test_the_quiet_import_leaves_tensorflow_as_if_imported_plainly():
    code = ("from features import device; device.quiet_tensorflow()\n"
            "import tensorflow as tf, importlib.machinery as m\n"
            "assert type(tf.__loader__) is m.SourceFileLoader and tf.__spec__.loader is tf.__loader__\n"
            "print(tf.reduce_sum(tf.ones(3)).numpy())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": ""})
    assert proc.returncode == 0 and proc.stdout.strip() == "3.0", proc.stderr
    assert "I0000" not in proc.stderr and "absl::InitializeLog" not in proc.stderr, proc.stderr


def test_a_gpu_tensorflow_cannot_use_is_reported_once(monkeypatch, caplog):
    monkeypatch.setattr(device, "_reported", False)
    monkeypatch.setattr(device, "gpu_present", lambda: True)  # a GPU on the machine ...
    monkeypatch.setattr(device, "visible_gpus", lambda: 0)  # ... that TensorFlow cannot use, with or without one
    with caplog.at_level(logging.WARNING, logger="features.device"):
        device.report_unusable_gpu()
        device.report_unusable_gpu()
    warnings = [r.message for r in caplog.records if "cannot use it" in r.message]
    assert len(warnings) == 1 and "running on the CPU" in warnings[0]


def test_no_gpu_no_word(monkeypatch, caplog):
    monkeypatch.setattr(device, "_reported", False)
    monkeypatch.setattr(device, "gpu_present", lambda: False)
    with caplog.at_level(logging.WARNING, logger="features.device"):
        device.report_unusable_gpu()
    assert not caplog.records


@pytest.mark.parametrize("script,main", [("extract", extract.main), ("classify", classify.main),
                                         ("finetune", finetune.main), ("predict", predict.main),
                                         ("export", export.main), ("ensemble", ensemble.main),
                                         ("report", report.main)])
def test_an_entry_point_calls_itself_by_its_own_name(script, main, monkeypatch, capsys):
    """`tl-extract` said "extract.py: error: ..." in its messages; each script says the name the user ran."""
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/tl-{script}"])
    with pytest.raises(SystemExit, match="2"):  # argparse's own refusal of a flag
        main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert f"tl-{script}: error:" in err and f"{script}.py" not in err
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    with pytest.raises(SystemExit, match="2"):
        main(["--no-such-flag"])
    assert f"{script}.py: error:" in capsys.readouterr().err
