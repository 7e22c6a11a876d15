"""report.py: RESULTS.md and plots from the results table and the run folders it names."""

import os
from pathlib import Path

import numpy as np
import pytest

from features import cache as store
from features.cli import classify, report
from features.records import runs
from helpers import blobs, last_json, write_cache


def _row(method, head, acc, total, per_epoch=None, precision=0.9):
    return {"dataset": "pets", "backbone": "toy", "image_size": 32, "method": method, "head": head,
            "accuracy": acc, "precision_macro": precision, "recall_macro": acc, "f1_macro": acc,
            "total_seconds": total, "seconds_per_epoch": per_epoch, "epochs_run": 3 if per_epoch else None,
            "n_test": 20, "per_class": {"cat": {"precision": precision}, "dog": {"precision": 1.0}}}


def test_report_from_the_table(tmp_path, capsys):
    out_dir = tmp_path / "runs"
    runs.append_result(out_dir, _row("frozen-features", "logreg", 0.5, 12.5))  # superseded by the next
    runs.append_result(out_dir, _row("frozen-features", "logreg", 0.9, 20.0))
    runs.append_result(out_dir, _row("finetune", "dense128", 0.95, 100.0, per_epoch=10.0, precision=0.96))
    runs.append_result(out_dir, _row("scratch", "dense128", 0.6, 300.0, per_epoch=40.0, precision=0.5))
    md, plots = tmp_path / "R.md", tmp_path / "plots"
    assert report.main(["--results", str(out_dir), "--out", str(md), "--plots-dir", str(plots),
                        "--note", "Data: tiny."]) == 0
    text = md.read_text()
    assert "Data: tiny." in text and "| frozen features + logreg | toy | 32 | - | 20.0 |" in text
    assert "| 12.5 |" not in text  # the older row of the same method and head is not shown
    assert "Highest macro precision: 0.9600 (finetune" in text
    assert ("Training time: fine-tuning 100 s (10.0 s/epoch, 3 epochs) for test accuracy 0.9500, against scratch "
            "(toy) 300 s (40.0 s/epoch, 3 epochs) for 0.6000.") in text and "5.0x less than fine-tuning" in text
    assert (plots / "accuracy_vs_time.png").read_bytes()[:4] == b"\x89PNG"
    assert "](plots/per_class_precision.png)" in text


def test_a_dataset_shows_its_newest_ensemble_only(tmp_path):
    out_dir = tmp_path / "runs"
    runs.append_result(out_dir, _row("finetune", "dense128", 0.95, 100.0, per_epoch=10.0))
    old = {**_row("ensemble", "toy finetune + toy logreg", 0.97, 120.0), "val_accuracy": 0.99}
    runs.append_result(out_dir, old)  # averages runs the table has since replaced
    runs.append_result(out_dir, {**_row("ensemble", "toy finetune", 0.96, 100.0), "val_accuracy": 0.98})
    md = tmp_path / "R.md"
    assert report.main(["--results", str(out_dir), "--out", str(md), "--plots-dir", str(tmp_path / "p"),
                        "--map", "none"]) == 0
    text = md.read_text()
    assert "| ensemble (toy finetune) |" in text and "toy finetune + toy logreg" not in text
    assert "How high: chosen on validation accuracy, ensemble (toy finetune) on toy (val 0.9800)" in text


def test_a_dataset_shows_the_newest_best_py_search_of_each_time_limit(tmp_path):
    out_dir = tmp_path / "runs"
    runs.append_result(out_dir, _row("finetune", "dense128", 0.95, 100.0, per_epoch=10.0))
    for head, limit, accuracy in (("5 min 00 s: toy logreg", 300, 0.91), ("5 min 00 s: toy finetune", 300, 0.94),
                                  ("15 min 00 s: toy finetune", 900, 0.95)):
        runs.append_result(out_dir, {**_row("best", head, accuracy, limit - 10.0), "val_accuracy": accuracy,
                                     "time_limit": limit})
    md = tmp_path / "R.md"
    assert report.main(["--results", str(out_dir), "--out", str(md), "--plots-dir", str(tmp_path / "p"),
                        "--map", "none"]) == 0
    text = md.read_text()
    assert "| best.py (5 min 00 s: toy finetune) |" in text and "| best.py (15 min 00 s: toy finetune) |" in text
    assert "toy logreg" not in text  # the older search of the same limit


def test_empty_table_exits_2(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "R.md")]) == 2
    assert "holds no results" in capsys.readouterr().err and not (tmp_path / "R.md").exists()


def test_out_may_be_a_device_never_a_folder(tmp_path, capsys):
    import stat

    out_dir = tmp_path / "runs"
    runs.append_result(out_dir, _row("frozen-features", "logreg", 0.9, 20.0))
    assert report.main(["--results", str(out_dir), "--out", "/dev/null", "--plots-dir", str(tmp_path / "p")]) == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    code = report.main(["--results", str(out_dir), "--out", str(tmp_path), "--plots-dir", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "is a folder" in err and "Traceback" not in err


def test_a_damaged_table_still_gives_a_report(tmp_path, capsys, caplog):
    out_dir = tmp_path / "runs"
    runs.append_result(out_dir, _row("frozen-features", "logreg", 0.9, 20.0))
    with open(out_dir / "results.jsonl", "a") as f:
        f.write('{"dataset": "pets", "acc')  # a row cut short by an old full disk
    runs.append_result(out_dir, _row("finetune", "dense128", 0.95, 100.0, per_epoch=10.0))
    assert report.main(["--results", str(out_dir), "--out", str(tmp_path / "R.md"),
                        "--plots-dir", str(tmp_path / "p")]) == 0
    assert "line 2 is damaged" in caplog.text
    assert "frozen features + logreg" in (tmp_path / "R.md").read_text()


def test_the_embedding_map_marks_the_best_heads_mistakes_and_is_reproducible(tmp_path, capsys, caplog):
    from features.cli import classify
    from features.heads import load_head
    from features.records.plots import embedding_map
    from helpers import blobs, last_json, write_cache

    X, y = blobs(n_per_class=40, classes=3, spread=6.0)  # overlapping classes: the head makes mistakes
    cache = write_cache(tmp_path / "emb" / "toy.h5", X, y, ["ant", "bee", "cow"])
    out_dir = tmp_path / "runs"
    assert classify.main(["--features", str(cache), "--out", str(out_dir), "--n-jobs", "1", "--json", "-q"]) == 0
    row = last_json(capsys.readouterr().out)
    pngs = []
    for n in range(2):
        plots = tmp_path / f"plots{n}"
        assert report.main(["--results", str(out_dir), "--out", str(tmp_path / f"R{n}.md"), "--plots-dir",
                            str(plots)]) == 0
        pngs.append((plots / "embedding_map_synthetic.png").read_bytes())
    assert pngs[0][:4] == b"\x89PNG" and pngs[0] == pngs[1]  # seeded: the same picture twice
    assert "test embeddings of toy, logreg's mistakes circled](plots0/embedding_map_synthetic.png)" in \
        (tmp_path / "R0.md").read_text()
    # The circled points are exactly the test images the head gets wrong, found here from the head itself.
    whole = store.read_cache(cache)
    test = whole.splits == 2
    head = load_head(Path(row["run_dir"]) / "head.skops")["pipeline"]
    wrong = set(whole.ids[test][head.predict(whole.embeddings[test]) != whole.labels[test]].tolist())
    drawn = embedding_map(row, tmp_path / "pca.png", method="pca")
    assert wrong and set(drawn.circled) == wrong and len(drawn.circled) == round((1 - row["accuracy"]) * row["n_test"])
    assert set(drawn.ids) == set(whole.ids[test].tolist()) and (tmp_path / "pca.png").stat().st_size > 1000
    assert report.main(["--results", str(out_dir), "--out", str(tmp_path / "R2.md"), "--plots-dir",
                        str(tmp_path / "p2"), "--map", "none"]) == 0
    assert not list((tmp_path / "p2").glob("embedding_map_*"))
    cache.unlink()  # the cache moved away: the report is still written, without the map
    assert report.main(["--results", str(out_dir), "--out", str(tmp_path / "R3.md"), "--plots-dir",
                        str(tmp_path / "p3")]) == 0
    assert "embedding map" not in (tmp_path / "R3.md").read_text() and "no embedding map" in caplog.text


def _history(folder, points):
    folder.mkdir(parents=True)
    lines = ["epoch,phase,seconds,elapsed,loss,accuracy,val_loss,val_accuracy"]
    lines += [f"{n},p,1,{sec},0.5,0.5,0.5,{acc}" for n, (sec, acc) in enumerate(points, 1)]
    (folder / "history.csv").write_text("\n".join(lines) + "\n")
    return str(folder)


def test_time_to_accuracy_against_the_small_cnns_plateau(tmp_path, capsys):
    out_dir = tmp_path / "runs"
    frozen = {**_row("frozen-features", "logreg", 0.9, 20.0), "cv_accuracy": 0.88}
    tuned = {**_row("finetune", "dense128", 0.95, 100.0, per_epoch=10.0),
             "run_dir": _history(tmp_path / "ft", [(30, 0.7), (60, 0.85), (90, 0.93)])}
    small = {**_row("scratch", "dense128", 0.8, 300.0, per_epoch=40.0), "backbone": "small_cnn",
             "run_dir": _history(tmp_path / "cnn", [(100, 0.6), (200, 0.8), (300, 0.79)])}
    same = {**_row("scratch", "dense128", 0.3, 400.0, per_epoch=40.0),
            "run_dir": _history(tmp_path / "same", [(200, 0.3), (400, 0.35)])}
    for row in (frozen, tuned, small, same):
        runs.append_result(out_dir, row)
    md, plots = tmp_path / "R.md", tmp_path / "plots"
    assert report.main(["--results", str(out_dir), "--out", str(md), "--plots-dir", str(plots), "--map",
                        "none"]) == 0
    text = md.read_text()
    assert "| method | best val accuracy | seconds to it | seconds to reach the small CNN's plateau (0.8000) |" in text
    assert "| frozen features + logreg on toy | 0.8800 | 20.0 | 20.0 |" in text
    assert "| finetune on toy | 0.9300 | 90.0 | 60.0 |" in text
    assert "| scratch (small_cnn) | 0.8000 | 200.0 | 200.0 |" in text
    assert "| scratch (toy) | 0.3500 | 400.0 | never reached |" in text
    assert (plots / "time_to_accuracy_pets.png").read_bytes()[:4] == b"\x89PNG"
    # the fine-tune is compared with the network from scratch that learns, the small CNN, not its own
    assert "against scratch (small_cnn) 300 s (40.0 s/epoch, 3 epochs) for 0.8000" in text


def test_how_high_is_chosen_on_validation_and_the_learning_curve_is_tabled(tmp_path, capsys):
    out_dir = tmp_path / "runs"
    # the test figure would pick the plain fine-tune; validation picks the recipe, and its test figure is reported
    runs.append_result(out_dir, {**_row("finetune", "dense128", 0.97, 100.0, per_epoch=10.0), "val_accuracy": 0.90,
                                 "unfreeze": "40"})
    runs.append_result(out_dir, {**_row("finetune", "dense128", 0.93, 200.0, per_epoch=20.0), "val_accuracy": 0.95,
                                 "unfreeze": "all", "schedule": "cosine", "label_smoothing": 0.1, "tta": "flip",
                                 "augment": "strong", "weight_decay": 0.05})
    runs.append_result(out_dir, {**_row("finetune", "dense128", 0.55, 10.0, per_epoch=1.0), "val_accuracy": 0.99,
                                 "unfreeze": "40", "train_per_class": 5})  # few-shot: not a candidate
    runs.append_result(out_dir, {**_row("scratch", "dense128", 0.5, 30.0, per_epoch=3.0), "backbone": "small_cnn",
                                 "train_per_class": 5})
    for seed, acc in enumerate((0.6, 0.7)):
        runs.append_result(out_dir, {"dataset": "pets", "backbone": "toy", "method": "learning-curve",
                                     "train_per_class": 5, "seed": seed, "n_train": 10, "accuracy": acc})
    runs.append_result(out_dir, {"dataset": "pets", "backbone": "toy", "method": "learning-curve",
                                 "train_per_class": None, "seed": 0, "n_train": 40, "accuracy": 0.9})
    md, plots = tmp_path / "R.md", tmp_path / "plots"
    assert report.main(["--results", str(out_dir), "--out", str(md), "--plots-dir", str(plots), "--map", "none"]) == 0
    text = md.read_text()
    assert ("How high: chosen on validation accuracy, finetune (all layers, cosine, AdamW, smoothing 0.1, "
            "RandAugment, flip TTA) on toy (val 0.9500) scored test accuracy 0.9300") in text
    assert "| finetune | toy | 32 | 3 | 100.0 | 10.0 | 0.9000 | 0.9700 |" in text
    assert "| 0.5500 |" not in text.split("Learning curve")[0]  # few-shot runs stay out of the main table
    assert "| 5 | 10 | 0.6500 ± 0.0500 (2) | 0.5500 | 0.5000 |" in text
    assert "| all | 40 | 0.9000 ± 0.0000 (1) | 0.9700 | - |" in text
    assert (plots / "learning_curve_pets.png").read_bytes()[:4] == b"\x89PNG"


def test_a_results_row_out_of_range_or_a_dataset_named_like_a_path_still_reports(tmp_path, caplog):
    out_dir = tmp_path / "runs"
    base = {"backbone": "toy", "image_size": 32, "method": "frozen-features", "head": "logreg",
            "precision_macro": 0.9, "recall_macro": 0.9, "f1_macro": 0.9, "total_seconds": 1.0, "n_test": 4}
    runs.append_result(out_dir, {**base, "dataset": "pets", "accuracy": 1e308})
    runs.append_result(out_dir, {**base, "dataset": "../../evil", "accuracy": 0.9, "val_accuracy": 1e308,
                                 "seconds_per_epoch": "fast", "per_class": {"a": {"precision": 1e308}}})
    plots = tmp_path / "plots"
    assert report.main(["--results", str(out_dir), "--out", str(tmp_path / "R.md"), "--plots-dir", str(plots),
                        "--map", "none"]) == 0
    assert "lacks accuracy" in caplog.text and "val_accuracy 1e+308 is out of range" in caplog.text
    assert all(p.parent == plots for p in plots.rglob("*")) and not (tmp_path / "evil").exists()


def test_a_head_rows_features_are_found_from_any_folder(tmp_path, capsys, monkeypatch):
    X, y = blobs()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    write_cache(Path("c.h5"), X, y, ["a", "b", "c"])
    assert classify.main(["--features", "c.h5", "--out", "runs", "--json", "-q", "--n-jobs", "1"]) == 0
    assert last_json(capsys.readouterr().out)["features"] == [str(tmp_path / "work" / "c.h5")]
    monkeypatch.chdir(tmp_path)
    assert report.main(["--results", "work/runs", "--out", "R.md", "--plots-dir", "p", "--map", "pca"]) == 0
    assert (tmp_path / "p" / "embedding_map_synthetic.png").is_file()


def test_a_runs_top_losses_are_its_most_confident_mistakes_and_the_classes_it_confused_most(tmp_path):
    from features.records.sheets import top_losses
    from helpers import make_image_folder

    root = make_image_folder(tmp_path / "photos", classes=("ant", "bee", "cow"), per_class=3, exts=(".png",))
    ids = sorted(str(p.relative_to(root)) for p in root.glob("*/*.png"))
    y = np.array([("ant", "bee", "cow").index(i.split("/")[0]) for i in ids])
    proba = np.eye(3)[y] * 0.9 + 0.05
    proba[1] = [0.05, 0.9, 0.05]  # an ant taken for a bee, surely
    proba[2] = [0.3, 0.6, 0.1]  # and another, less surely
    proba[7] = [0.15, 0.05, 0.8][::-1]  # a cow taken for an ant
    (root / ids[2]).unlink()  # gone: its tile says so, the sheet is still drawn
    found = top_losses(ids, y, proba=proba, class_names=["ant", "bee", "cow"], photo_root=root,
                       path=tmp_path / "top.png")
    assert [(t["id"], t["true"], t["predicted"]) for t in found["top_losses"]] == [
        (ids[1], "ant", "bee"), (ids[7], "cow", "ant"), (ids[2], "ant", "bee")]
    assert found["top_losses"][0]["probability"] == pytest.approx(0.9)
    assert found["confused"][0] == {"true": "ant", "predicted": "bee", "photos": 2}
    assert (tmp_path / "top.png").read_bytes()[:4] == b"\x89PNG"
    assert top_losses(ids, y, proba=np.eye(3)[y], class_names=["ant", "bee", "cow"], photo_root=root,
                      path=tmp_path / "none.png")["top_losses"] == []
    assert not (tmp_path / "none.png").exists()  # no mistake, no sheet


def test_the_report_shows_the_top_losses_of_the_run_chosen_on_validation(tmp_path, capsys):
    X, y = blobs(n_per_class=40, spread=12.0)  # overlapping: some test photos are wrong
    cache = write_cache(tmp_path / "c.h5", X, y, ["ant", "bee", "cow"], attrs={"dataset": "toy"})
    assert classify.main(["--features", str(cache), "--out", str(tmp_path / "runs"), "--json", "-q"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["accuracy"] < 1 and (Path(result["run_dir"]) / "top_losses.png").is_file()
    md, plots = tmp_path / "R.md", tmp_path / "plots"
    assert report.main(["--results", str(tmp_path / "runs"), "--out", str(md), "--plots-dir", str(plots),
                        "--map", "none"]) == 0
    text = md.read_text()
    assert "![toy: the test photos frozen-features toy logreg (chosen on validation) got wrong with the highest " \
           "confidence](plots/top_losses_toy.png)" in text
    assert (plots / "top_losses_toy.png").read_bytes() == (Path(result["run_dir"]) / "top_losses.png").read_bytes()
