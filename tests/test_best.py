"""best.py on tiny photos with a budget of seconds: the budget held, the choice made on validation and the test
split not used to make it, a killed search leaving a usable run, a second search starting where the first ended,
and bad input refused in one line."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from features.budget.board import Candidate, choose
from features.budget.clock import parse_duration
from features.cli import best, predict
from features.errors import UsageError
from features.records import runs
from helpers import COLOURS, colour_photo, last_json, make_image_folder

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 45  # seconds: Lite0 extracted and its heads fitted, fine-tuning on views cut by the clock


def _photos(root: Path, per_class: int = 20) -> Path:
    for k, (name, colour) in enumerate(COLOURS.items()):
        for i in range(per_class):
            colour_photo(root / name / f"{name}{i}.png", colour, seed=100 * k + i)
    return root


def _search(root: Path, limit=LIMIT) -> SimpleNamespace:
    out = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(out):
        code = best.main(["--data-dir", str(root / "photos"), "--time-limit", str(limit), "--backbones",
                          "efficientnet_lite0", "--out", str(root / "runs"), "--embeddings", str(root / "emb"),
                          "-q", "--json"])
    wall = time.monotonic() - start
    assert code == 0, out.getvalue()
    return SimpleNamespace(result=last_json(out.getvalue()), wall=wall, out=out.getvalue())


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("best")
    _photos(root / "photos")
    return SimpleNamespace(root=root, first=_search(root))


def test_durations_are_read_in_seconds_minutes_and_hours():
    assert [parse_duration(t) for t in ("900", "90s", "15m", "1.5h", "1h30m", "2m 30s")] == \
        [900, 90, 900, 5400, 5400, 150]
    for bad in ("soon", "", "15x", "1h30", "-5", "0", "1.5.5", "m"):
        with pytest.raises(UsageError, match="time_limit"):
            parse_duration(bad)


def test_the_choice_goes_by_validation_only():
    def candidate(name, val, test, loss=None):
        return Candidate(name=name, method="m", backbone="b", run_dir=name, val_accuracy=val, test_accuracy=test,
                         seconds=1.0, val_loss=loss)

    found = [candidate("a", 0.90, 0.99), candidate("b", 0.95, 0.80), candidate("c", 0.95, 0.85)]
    assert choose(found).name == "b"  # the best on validation, the first of a tie; test accuracy plays no part
    found = [candidate("a", 0.95, 0.99, 0.3), candidate("b", 0.95, 0.80, 0.2), candidate("c", 0.90, 0.85, 0.1)]
    assert choose(found).name == "b"  # of a tie of accuracy, the lower validation log loss


@pytest.mark.slow
def test_the_search_ends_within_its_budget_and_its_choice_is_a_finished_run(searched, tmp_path, capsys):
    first = searched.first
    assert first.wall <= LIMIT * 1.05 and first.result["seconds"] <= LIMIT * 1.05, first.out
    chosen = first.result["run_dir"]
    assert "efficientnet_lite0 logreg" in first.out and "views x" in first.out  # both steps ran (or were cut)
    photo = next((searched.root / "photos" / "red").iterdir())
    assert predict.main([chosen, str(photo), "--csv", str(tmp_path / "p.csv"), "-q"]) == 0
    assert (tmp_path / "p.csv").read_text().splitlines()[1].split(",")[1] == "red"


@pytest.mark.slow
def test_the_chosen_run_is_the_best_on_validation_and_the_leaderboard_says_so(searched):
    result = searched.first.result
    board = result["leaderboard"]
    best_val = max(r["val_accuracy"] for r in board)
    chosen = [r for r in board if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["val_accuracy"] == best_val == result["val_accuracy"]
    assert chosen[0]["run_dir"] == result["run_dir"]
    folder = Path(result["search_dir"])
    assert {"leaderboard.csv", "leaderboard.md", "time.png", "best.json"} <= {p.name for p in folder.iterdir()}
    assert len((folder / "leaderboard.csv").read_text().splitlines()) == len(board) + 1
    assert "**chosen**" in (folder / "leaderboard.md").read_text()
    row = runs.read_results(searched.root / "runs")[-1]
    assert row["method"] == "best" and row["run_dir"] == result["run_dir"] and row["time_limit"] == LIMIT
    assert row["accuracy"] == result["accuracy"] and row["val_accuracy"] == result["val_accuracy"]


@pytest.mark.slow
def test_a_second_search_starts_where_the_first_ended(searched):
    second = _search(searched.root)
    reused = [r for r in second.result["leaderboard"] if r["reused"]]
    assert "efficientnet_lite0 logreg" in {r["candidate"] for r in reused}, second.out
    assert "reused from an earlier search" in second.out
    assert second.wall <= LIMIT * 1.05


@pytest.mark.slow
def test_a_killed_search_leaves_its_best_run_so_far_usable(tmp_path):
    _photos(tmp_path / "photos")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "best.py"), "--data-dir", str(tmp_path / "photos"), "--time-limit", "10m",
         "--backbones", "efficientnet_lite0", "--out", str(tmp_path / "runs"), "--embeddings", str(tmp_path / "emb"),
         "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        for line in process.stdout:  # a step's line is printed once its run folder is finished
            if "best so far" in line:
                break
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    run_dir = line.rsplit(", ", 1)[1].strip()
    assert Path(tmp_path / run_dir).is_dir()
    photo = next((tmp_path / "photos" / "blue").iterdir())
    assert predict.main([str(tmp_path / run_dir), str(photo), "--csv", str(tmp_path / "p.csv"), "-q"]) == 0
    assert not list((tmp_path / "runs").glob("*-best"))  # no leaderboard under a final name: the search was cut


@pytest.mark.parametrize("argv, needle", [
    (["--time-limit", "soon"], "--time-limit soon: give seconds (900) or a duration"),
    (["--time-limit", "0"], "--time-limit 0: give a time above zero"),
])
def test_a_time_limit_that_is_not_a_duration_is_refused(argv, needle, tmp_path, capsys):
    _photos(tmp_path / "photos", per_class=4)
    assert best.main(["--data-dir", str(tmp_path / "photos"), "--out", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and not (tmp_path / "runs").exists()


def test_a_time_limit_too_short_for_the_first_step_says_how_long_it_needs(tmp_path, capsys):
    _photos(tmp_path / "photos", per_class=20)
    assert best.main(["--data-dir", str(tmp_path / "photos"), "--time-limit", "1", "--out", str(tmp_path / "runs"),
                      "--embeddings", str(tmp_path / "emb")]) == 2
    err = capsys.readouterr().err
    assert "--time-limit 1 s: too short for the first step" in err and "needs about" in err
    assert not (tmp_path / "emb").exists() and not list((tmp_path / "runs").glob("*/"))


def test_one_class_or_too_few_photos_to_choose_on_are_refused(tmp_path, capsys):
    make_image_folder(tmp_path / "one", classes=("cat",), per_class=10)
    assert best.main(["--data-dir", str(tmp_path / "one"), "--time-limit", "5m", "--out", str(tmp_path)]) == 2
    assert "found 1 class folder(s); a classifier needs at least two" in capsys.readouterr().err
    make_image_folder(tmp_path / "few", per_class=2)
    assert best.main(["--data-dir", str(tmp_path / "few"), "--time-limit", "5m", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "too few val photos in cat 0, dog 0" in err and "--split" in err
    make_image_folder(tmp_path / "untested", per_class=4)
    assert best.main(["--data-dir", str(tmp_path / "untested"), "--time-limit", "5m", "--out", str(tmp_path)]) == 2
    assert "no test photos to score the candidates on" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/*.h5")) and not (tmp_path / "embeddings").exists()


def _planner(tmp_path, *, limit: float, rate: float = 100.0):
    """A search over 2 x 20 photos whose clock has ``limit`` seconds and whose Lite0 runs ``rate`` images a
    second (set, not measured: the plan is the test's own)."""
    from features.budget.clock import Clock
    from features.budget.search import _Search
    from features.data import load_folder

    said = []
    source = load_folder(_photos(tmp_path / "photos"))
    search = _Search(source, clock=Clock(limit=limit), out_dir=tmp_path / "runs", embeddings_dir=tmp_path / "emb",
                     backbones=["efficientnet_lite0"], progress=False, say=said.append, gpu=False)
    search.rates["efficientnet_lite0"] = rate
    return search, said


def test_a_step_that_would_not_fit_in_the_time_left_is_skipped_and_said_so(tmp_path):
    search, said = _planner(tmp_path, limit=30)  # 10 s of them kept for the ensemble and the leaderboard
    assert not search.fits("a long step", 25.0) and search.skipped == ["a long step"]
    assert "skipped a long step: it needs about 25 s" in said[-1]
    assert search.fits("a short step", 5.0) and search.skipped == ["a long step"]
    assert not search.fits("a step that fits only without what is kept", 15.0, keep=10.0)


def test_fine_tuning_takes_the_most_views_that_fit(tmp_path, monkeypatch):
    search, said = _planner(tmp_path, limit=3600, rate=10.0)
    search.frozen["efficientnet_lite0"] = Candidate(name="lite0 logreg", method="frozen-features",
                                                    backbone="efficientnet_lite0", run_dir="r", val_accuracy=0.9,
                                                    test_accuracy=0.9, seconds=1.0)
    asked = []
    monkeypatch.setattr(search, "train_step", lambda name, settings, **kw: asked.append(settings["views"]))
    costs = {k: sum(search.views_seconds("efficientnet_lite0", k)) for k in (8, 4, 2)}
    assert costs[8] > costs[4] > costs[2]
    search.views_step(set())
    search.clock.limit = 10 + 15 + (costs[8] + costs[4]) / 2 + 5  # room for 4 views, not 8
    search.views_step(set())
    search.clock.limit = 10 + 15 + costs[2] / 2  # room for none
    search.views_step(set())
    assert asked == [8, 4] and "skipped efficientnet_lite0 views x2 finetune" in said[-1]
    search.clock.limit = 3600
    assert search.views_step({"efficientnet_lite0"}) is None and asked == [8, 4]  # fine-tuned already


@pytest.mark.slow
def test_ctrl_c_names_the_best_run_so_far_and_writes_no_leaderboard(searched, monkeypatch, capsys):
    from features.budget import search

    def interrupted(self, done):
        raise KeyboardInterrupt

    monkeypatch.setattr(search._Search, "views_step", interrupted)
    boards = set((searched.root / "runs").glob("*-best"))
    code = best.main(["--data-dir", str(searched.root / "photos"), "--time-limit", str(LIMIT), "--backbones",
                      "efficientnet_lite0", "--out", str(searched.root / "runs"), "--embeddings",
                      str(searched.root / "emb"), "-q"])
    out, err = capsys.readouterr()
    assert code == 130 and "interrupted; the steps that finished are run folders" in err
    named = out.split("stopped: the best model so far is ", 1)[1].split(" (", 1)[0]
    assert (Path(named) / "metrics.json").is_file()
    assert set((searched.root / "runs").glob("*-best")) == boards


def test_a_backbone_whose_weights_cannot_be_had_is_skipped_and_the_search_goes_on(tmp_path, monkeypatch):
    from features.errors import WeightsUnavailableError

    search, said = _planner(tmp_path, limit=3600)
    search.backbones = ["efficientnet_lite0", "vgg19"]
    first = Candidate(name="efficientnet_lite0 logreg", method="frozen-features", backbone="efficientnet_lite0",
                      run_dir="r", val_accuracy=0.9, test_accuracy=0.9, seconds=1.0)
    monkeypatch.setattr(search, "frozen_step", lambda name, **kw: first if name == "efficientnet_lite0" else
                        (_ for _ in ()).throw(WeightsUnavailableError("vgg19: ImageNet weights cannot be downloaded")))
    for step in ("concat_step", "head_step", "views_step", "recipe_step", "ensemble_step"):
        monkeypatch.setattr(search, step, lambda *a, **kw: None)
    search.run()
    assert "vgg19 logreg" in search.skipped and list(search.frozen) == ["efficientnet_lite0"]
    assert any("skipped vgg19 logreg: vgg19: ImageNet weights cannot be downloaded" in line for line in said)
