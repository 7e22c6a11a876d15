"""Where the network looked: CAM of linear heads (exact), Grad-CAM of fine-tuned runs and the svm head,
predict.py --explain, the report's top losses with heatmaps, and what has no map refused in one line."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from features.cli import classify, extract, finetune, predict, report
from features.heads import fold_head
from features.serve.explain import HeadExplainer, explainer
from features.serve.predict import load_predictor
from helpers import last_json, tmpfs, write_image


def _scores(predictor, embeddings, classes):
    """(class scores, their condition): the head's folded linear map (the members' mean) of ``embeddings``, and
    the sum of the products' magnitudes, the scale a float32 embedding's rounding is amplified to."""
    linear = fold_head(predictor.model, predictor.head)
    kernel, bias = linear.kernel.mean(axis=0), linear.bias.mean(axis=0)
    if kernel.shape[1] == 1:
        kernel, bias = np.concatenate([-kernel, kernel], axis=1), np.concatenate([-bias, bias])
    e = np.asarray(embeddings, np.float64)
    k = np.asarray(classes)
    return (e @ kernel + bias)[np.arange(len(k)), k], np.abs(e * kernel[:, k].T).sum(axis=1)


def _check_cam(explaining, found, paths):
    """Exact on the embeddings the map is made of; within float32's rounding of the predict.py's embeddings."""
    from features.data import image_batches

    predictor = explaining.predictor
    images = np.concatenate([b.numpy() for _, b in image_batches(paths, predictor.image_size, batch_size=32)])
    maps, mirrored = explaining._feature_maps(images)
    pooled = explaining._pool(maps) if mirrored is None else (explaining._pool(maps) + explaining._pool(mirrored)) / 2
    z, scale = _scores(predictor, pooled, found.classes)
    cam = found.maps.mean(axis=(1, 2)) + found.constants
    np.testing.assert_allclose(cam, z, rtol=0, atol=1e-9 * max(1.0, scale.max()))
    embed = predictor.backbones[0][0]
    z, scale = _scores(predictor, np.asarray(embed(images)), found.classes)
    assert (np.abs(cam - z) <= 1e-4 * scale).all(), np.abs(cam - z) / scale  # the frozen graph's folded BN


@pytest.mark.parametrize("head", ["logreg", pytest.param("sgd", marks=pytest.mark.slow)])
def test_a_linear_heads_cam_averages_back_to_its_class_score(head, head_runs):
    predictor = load_predictor(head_runs.runs[head], "tf")
    explaining = explainer(predictor)
    paths = sorted(str(p) for p in head_runs.photos.glob("*/*"))
    for classes in (None, np.arange(len(paths)) % 2):  # the predicted class, then each class in turn
        found = explaining.explain(paths, classes)
        assert found.method == "cam" and found.maps.shape[0] == len(paths) and found.maps.ndim == 3
        if classes is not None:
            assert found.classes.tolist() == classes.tolist()
        _check_cam(explaining, found, paths)
        np.testing.assert_allclose(found.probabilities, predictor.predict(paths)[1], atol=1e-4)


@pytest.mark.slow
def test_with_a_flip_cache_a_mirrored_photos_map_is_the_mirrored_map(tmp_path, capsys):
    """The mirrored photo's map is mirrored back before the two are averaged: then the map of a mirrored photo
    is the photo's map mirrored, whatever asymmetry the network's padding has."""
    from PIL import Image

    photos = tmp_path / "pets"
    for i in range(16):
        write_image(photos / ("cat", "dog")[i % 2] / f"img{i}.png", seed=i, size=(48, 64))
    assert extract.main(["--data-dir", str(photos), "--out", str(tmp_path / "emb"), "--image-size", "64",
                         "--tta", "flip", "--json", "-q"]) == 0
    cache = last_json(capsys.readouterr().out)["cache"]
    assert classify.main(["--features", cache, "--out", str(tmp_path / "runs"), "--json", "-q", "--n-jobs",
                          "1"]) == 0
    predictor = load_predictor(last_json(capsys.readouterr().out)["run_dir"], "tf")
    photo = photos / "cat" / "img0.png"
    mirrored = tmp_path / "mirrored.png"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    found = explainer(predictor).explain([str(photo), str(mirrored)], np.array([0, 0]))
    assert found.method == "cam"
    scale = np.abs(found.maps).max()
    np.testing.assert_allclose(found.maps[1], found.maps[0][:, ::-1], atol=1e-4 * scale)
    assert np.abs(found.maps[0] - found.maps[0][:, ::-1]).max() > 1e-3 * scale  # not symmetric by itself


def test_the_svm_map_is_its_log_probability_differentiated_along_each_position(head_runs):
    """The central differences the svm's map is made of, checked on a head whose gradient is known: logreg's
    log-probability has the gradient w_k - sum_j p_j w_j."""
    explaining = HeadExplainer(load_predictor(head_runs.runs["logreg"], "tf"))
    rng = np.random.default_rng(0)
    e = np.abs(rng.normal(1.0, 0.5, explaining.pipeline.n_features_in_))
    directions = np.abs(rng.normal(1.0, 0.5, (6, e.size))) - e
    linear = fold_head(explaining.pipeline, "logreg")
    w = np.concatenate([0 * linear.kernel[0], linear.kernel[0]], axis=1)  # two classes: softmax of [0, z]
    p = explaining.pipeline.predict_proba(e[None])[0]
    for k in (0, 1):
        expected = directions @ (w[:, k] - w @ p)
        np.testing.assert_allclose(explaining._derivatives(e, directions, k), expected, rtol=1e-4, atol=1e-8)


def test_the_svm_head_gets_a_grad_cam_map(head_runs):
    predictor = load_predictor(head_runs.runs["svm"], "tf")
    paths = sorted(str(p) for p in head_runs.photos.glob("*/*"))[:6]
    found = explainer(predictor).explain(paths)
    assert found.method == "grad-cam" and found.constants is None
    assert np.isfinite(found.maps).all() and np.abs(found.maps).max() > 0


def test_predict_explain_draws_a_png_a_photo_and_names_it(head_runs, tmp_path, capsys):
    run, photos = str(head_runs.runs["logreg"]), sorted(head_runs.photos.glob("*/*"))[:3]
    (tmp_path / "bad.jpg").write_text("not a photo")
    inputs = [*map(str, photos), str(tmp_path / "bad.jpg")]
    assert predict.main([run, *inputs, "--explain", str(tmp_path / "heat"), "--json", "-q"]) == 0
    out = capsys.readouterr().out
    rows = last_json(out)["predictions"]
    assert [r["path"] for r in rows] == inputs[:3]
    for r in rows:
        assert os.path.isfile(r["heatmap"]) and r["heatmap"].endswith(".png")
        assert f"heatmap {r['heatmap']}" in out
    assert len(os.listdir(tmp_path / "heat")) == 3
    assert "heatmaps of the predicted classes (CAM of logreg on efficientnet_lite0): 3 in" in out
    assert predict.main([run, *inputs, "--explain", str(tmp_path / "heat2"), "--csv", str(tmp_path / "p.csv"),
                         "-q"]) == 0
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [bool(r["heatmap"]) for r in table] == [True, True, True, False]
    assert all(os.path.isfile(r["heatmap"]) for r in table[:3])


def test_a_disk_that_fills_while_heatmaps_are_drawn_ends_in_one_line_and_leaves_whole_pngs(head_runs, tmp_path, capsys):
    from PIL import Image

    run, photos = str(head_runs.runs["logreg"]), sorted(head_runs.photos.glob("*/*"))
    with tmpfs(tmp_path / "disk", "size=300k") as disk:
        fill_but(disk, 120_000)  # room for a PNG or so, not all of them
        code = predict.main([run, *map(str, photos), "--explain", str(disk / "heat")])
        err = capsys.readouterr().err
        assert code == 2 and "no space left on the device" in err and len(err.strip().splitlines()) == 1
        left = list((disk / "heat").iterdir())
        assert not [p for p in left if not p.name.endswith(".png")], left  # no temporary file left
        for png in left:  # each one written whole
            with Image.open(png) as image:
                image.load()


def fill_but(folder, spare: int) -> None:
    """Fill ``folder``'s device but for about ``spare`` bytes."""
    stat = os.statvfs(folder)
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - spare))


def test_what_has_no_map_is_refused_in_one_line(head_runs, tmp_path, capsys):
    photo = str(next(head_runs.photos.glob("cat/*")))
    assert classify.main(["--features", str(head_runs.cache), "--model", "knn", "--out", str(tmp_path / "runs"),
                          "--json", "-q", "--n-jobs", "1"]) == 0
    knn = last_json(capsys.readouterr().out)["run_dir"]
    logreg = str(head_runs.runs["logreg"])
    for argv, says in [
        ([knn, photo], "a knn head's probabilities are its neighbours' votes"),
        ([logreg, photo, "--ensemble", str(head_runs.runs["sgd"])], "not an ensemble or an exported model"),
    ]:
        assert predict.main([*argv, "--explain", str(tmp_path / "heat")]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list((tmp_path / "heat").glob("*.png")) if (tmp_path / "heat").exists() else True
    (tmp_path / "file").write_text("")
    assert predict.main([logreg, photo, "--explain", str(tmp_path / "file")]) == 2
    assert "--explain" in capsys.readouterr().err


@pytest.mark.slow
def test_the_report_draws_the_chosen_runs_top_losses_with_heatmaps(tmp_path, capsys, caplog):
    photos = tmp_path / "pets"
    for i in range(24):  # both classes drawn alike: the head makes mistakes
        write_image(photos / ("cat", "dog")[i % 2] / f"img{i}.jpg", seed=i)
    assert extract.main(["--data-dir", str(photos), "--out", str(tmp_path / "emb"), "--image-size", "64", "--json",
                         "-q"]) == 0
    cache = last_json(capsys.readouterr().out)["cache"]
    runs = tmp_path / "runs"
    assert classify.main(["--features", cache, "--out", str(runs), "--json", "-q", "--n-jobs", "1"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["accuracy"] < 1
    md, plots = tmp_path / "R.md", tmp_path / "plots"
    assert report.main(["--results", str(runs), "--out", str(md), "--plots-dir", str(plots), "--map", "none"]) == 0
    assert "got wrong with the highest confidence, with where the network looked (cam)" in md.read_text()
    png, run_sheet = plots / "top_losses_pets.png", Path(result["run_dir"]) / "top_losses.png"
    assert png.is_file() and png.read_bytes() != run_sheet.read_bytes()  # drawn again, with heatmaps
    assert report.main(["--results", str(runs), "--out", str(md), "--plots-dir", str(plots), "--map", "none",
                        "--no-heatmaps"]) == 0
    assert "where the network looked" not in md.read_text() and png.read_bytes() == run_sheet.read_bytes()
    os.rename(photos, tmp_path / "moved")  # photos gone: the run's own sheet, with a warning
    assert report.main(["--results", str(runs), "--out", str(md), "--plots-dir", str(plots), "--map", "none"]) == 0
    assert "where the network looked" not in md.read_text() and png.read_bytes() == run_sheet.read_bytes()
    assert "the report shows the run's top losses without heatmaps" in caplog.text


@pytest.mark.slow
def test_a_cam_on_real_photos_averages_back_to_the_class_score_with_and_without_flips(shared_datasets, tmp_path,
                                                                                        capsys):
    data = shared_datasets / "flowers"
    subset = tmp_path / "flowers"
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        (subset / folder.name).mkdir(parents=True)
        for photo in sorted(folder.glob("*.jpg"))[:8]:
            os.symlink(photo, subset / folder.name / photo.name)
    paths = sorted(str(p) for p in subset.glob("*/*.jpg"))[::4]
    for tta, head in (("none", "logreg"), ("flip", "linear_svm")):
        assert extract.main(["--data-dir", str(subset), "--out", str(tmp_path / "emb"), "--image-size", "160",
                             "--tta", tta, "--runtime", "tf", "--json", "-q"]) == 0
        cache = last_json(capsys.readouterr().out)["cache"]
        assert classify.main(["--features", cache, "--model", head, "--out", str(tmp_path / "runs"), "--json",
                              "-q", "--n-jobs", "1"]) == 0
        explaining = explainer(load_predictor(last_json(capsys.readouterr().out)["run_dir"], "tf"))
        found = explaining.explain(paths)
        assert found.method == "cam" and found.maps.shape[1:] == (5, 5)
        _check_cam(explaining, found, paths)


def _scene(path, where: str | None, seed: int, size: int = 128):
    """A grassy noise background; ``where`` "left"/"right": a red-and-white checkered disc on that side."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array([70, 120, 60]) + rng.normal(0, 18, (size, size, 3)), 0, 255)
    if where:
        cy = rng.integers(size // 3, 2 * size // 3)
        cx = rng.integers(size // 6, size // 3) if where == "left" else rng.integers(2 * size // 3, 5 * size // 6)
        yy, xx = np.mgrid[:size, :size]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 7) ** 2
        checks = ((yy // 4 + xx // 4) % 2).astype(bool)
        pixels[disc & checks] = [230, 30, 40]
        pixels[disc & ~checks] = [250, 250, 250]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@pytest.mark.slow
def test_grad_cam_of_a_finetuned_model_moves_with_the_object(tmp_path, capsys):
    data = tmp_path / "scenes"
    for i in range(20):
        _scene(data / "disc" / f"d{i}.png", ("left", "right")[i % 2], seed=i)
        _scene(data / "grass" / f"g{i}.png", None, seed=100 + i)
    assert finetune.main(["--data-dir", str(data), "--out", str(tmp_path / "runs"), "--image-size", "128",
                          "--unfreeze", "0", "--head-epochs", "4", "--epochs", "1", "--batch-size", "8",
                          "--json", "-q"]) == 0
    run = last_json(capsys.readouterr().out)["run_dir"]
    left = [str(_scene(tmp_path / "new" / f"l{i}.png", "left", seed=500 + i)) for i in range(3)]
    right = [str(_scene(tmp_path / "new" / f"r{i}.png", "right", seed=600 + i)) for i in range(3)]
    predictor = load_predictor(run)
    disc = predictor.class_names.index("disc")
    found = explainer(predictor).explain(left + right, np.full(6, disc))
    assert found.method == "grad-cam" and found.maps.shape[1:] == (4, 4)
    heat = np.clip(found.maps, 0, None)
    assert (heat.max(axis=(1, 2)) > 0).all()  # non-trivial
    half = heat.shape[2] // 2
    left_mass, right_mass = heat[:, :, :half].sum(axis=(1, 2)), heat[:, :, half:].sum(axis=(1, 2))
    assert (left_mass[:3] > right_mass[:3]).all() and (right_mass[3:] > left_mass[3:]).all(), (left_mass, right_mass)
    # class-discriminative: the other class's map puts less of its weight on the disc's side
    other = np.clip(explainer(predictor).explain(left + right, np.full(6, 1 - disc)).maps, 0, None)
    side = np.concatenate([left_mass[:3], right_mass[3:]]) / np.maximum(heat.sum(axis=(1, 2)), 1e-12)
    other_side = np.concatenate([other[:3, :, :half].sum(axis=(1, 2)), other[3:, :, half:].sum(axis=(1, 2))])
    assert (other_side / np.maximum(other.sum(axis=(1, 2)), 1e-12) < side).all(), (side, other_side)
    assert predict.main([run, *left[:1], "--explain", str(tmp_path / "heat"), "--tta", "flip", "--json", "-q"]) == 0
    assert os.path.isfile(last_json(capsys.readouterr().out)["predictions"][0]["heatmap"])


def test_overlay_leaves_a_photo_with_no_positive_evidence_as_it_is():
    from features.records.sheets import overlay

    photo = np.full((30, 40, 3), 100, np.uint8)
    assert overlay(photo, -np.ones((4, 4))) is photo
    drawn = overlay(photo, np.eye(4))
    assert drawn.shape == photo.shape and not np.array_equal(drawn, photo)


def test_a_16_bit_photo_is_drawn_as_the_network_sees_it_not_white(tmp_path):
    """convert("RGB") clipped a 16-bit PNG's levels at 255: its thumbnail (and heatmap) drew almost white."""
    from PIL import Image

    from features.records.sheets import thumbnail

    levels = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image, why = thumbnail(tmp_path / "deep.png")
    assert why == "" and image.shape == (48, 64, 3)
    assert abs(float(image.mean()) - float((levels / 257.0).mean())) < 1.0  # mid-grey on average, as TF decodes it


def test_a_heatmaps_caption_gives_the_probability_that_was_printed(tmp_path, monkeypatch):
    """A bf16 head printed its bf16 probability and captioned its heatmap with TensorFlow's fp32 one."""
    from features.records import sheets
    from features.serve.explain import Heatmaps, write_heatmaps

    drawn = []
    monkeypatch.setattr(sheets, "draw_sheet", lambda rows, path, *a, **k: drawn.append(rows[0][0].caption))
    found = Heatmaps(rows=np.array([0]), classes=np.array([1]), probabilities=np.array([[0.3, 0.7]]),
                     maps=np.ones((1, 2, 2)), constants=None, method="cam")
    write_heatmaps(tmp_path / "h", ["a.jpg"], found, ["cat", "dog"], shown={0: np.array([0.281, 0.719])})
    write_heatmaps(tmp_path / "h2", ["a.jpg"], found, ["cat", "dog"])
    assert drawn == ["a.jpg\ndog 0.719", "a.jpg\ndog 0.700"]
