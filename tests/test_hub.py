"""KerasHub encoders as backbones (hub:PRESET): tiny randomly initialised presets of each family, saved with
save_to_preset into a folder, run through the toolkit's real code paths offline."""

import time

import numpy as np
import pytest

from conftest import last_json, make_image_folder
from features.cli import classify, export, extract, finetune, predict

keras_hub = pytest.importorskip("keras_hub")

SIZE = 64


def _save(folder, backbone, converter):
    folder.mkdir(parents=True)
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """One tiny preset of each family: 2 layers, hidden size 32, with its image converter."""
    root = tmp_path_factory.mktemp("presets")
    layers = dict(num_layers=2, num_heads=2)
    common = dict(image_size=(SIZE, SIZE), scale=1 / 255)
    return {
        "dinov2": _save(root / "dinov2", keras_hub.models.DINOV2Backbone(
            patch_size=16, hidden_dim=32, intermediate_dim=64, image_shape=(SIZE, SIZE, 3),
            position_embedding_shape=(SIZE, SIZE, 3), **layers), keras_hub.layers.DINOV2ImageConverter(**common)),
        "vit": _save(root / "vit", keras_hub.models.ViTBackbone(
            image_shape=(SIZE, SIZE, 3), patch_size=16, hidden_dim=32, mlp_dim=64, **layers),
            keras_hub.layers.ViTImageConverter(**common)),
        "clip": _save(root / "clip", keras_hub.models.CLIPVisionEncoder(
            patch_size=16, hidden_dim=32, intermediate_dim=64, image_shape=(SIZE, SIZE, 3), **layers),
            keras_hub.layers.CLIPImageConverter(**common)),
        "siglip": _save(root / "siglip", keras_hub.models.SigLIPVisionEncoder(
            patch_size=16, hidden_dim=32, intermediate_dim=64, image_shape=(SIZE, SIZE, 3), **layers),
            keras_hub.layers.SigLIPImageConverter(**common)),
    }


@pytest.mark.slow
@pytest.mark.parametrize("family,width", [("dinov2", 64), ("vit", 32), ("clip", 32), ("siglip", 32)])
def test_each_family_embeds_as_its_authors_probe(family, width, presets):
    """DINOv2: class token and mean patch token side by side; ViT and CLIP: the class token; SigLIP: its
    pooled output. The frozen graph extraction runs gives the Keras model's numbers."""
    from features.models import create_backbone, get_spec
    from features.models.build import embedding_function

    name = f"hub:{presets[family]}"
    spec = get_spec(name)
    assert (spec.default_size, spec.width) == (SIZE, width) and "/" not in spec.slug
    model = create_backbone(name)
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, width) and np.isfinite(y).all()
    np.testing.assert_allclose(np.asarray(embedding_function(model, SIZE)(x)), y, atol=1e-5)


@pytest.mark.slow
def test_extract_classify_predict_export_through_a_hub_preset(presets, tmp_path, capsys):
    photos = make_image_folder(tmp_path / "pets", per_class=8)
    backbone = f"hub:{presets['dinov2']}"
    assert extract.main(["--data-dir", str(photos), "--backbone", backbone, "--out", str(tmp_path / "emb"),
                         "--json", "-q"]) == 0
    cache = last_json(capsys.readouterr().out)["cache"]
    assert "/" not in cache.rsplit("/", 1)[-1] and "hub-dinov2-" in cache
    assert extract.main(["--data-dir", str(photos), "--backbone", backbone, "--out", str(tmp_path / "emb"),
                         "--json", "-q"]) == 0
    assert last_json(capsys.readouterr().out)["cache_hit"]
    assert classify.main(["--features", cache, "--out", str(tmp_path / "runs"), "--json", "-q", "--n-jobs",
                          "1"]) == 0
    run = last_json(capsys.readouterr().out)["run_dir"]
    photo = str(next(photos.glob("cat/*.jpg")))
    assert predict.main([run, photo, "--json", "-q"]) == 0
    from_run = dict(last_json(capsys.readouterr().out)["predictions"][0]["top"])
    assert export.main([run, "--format", "saved_model", "--out", str(tmp_path / "sm"), "-q"]) == 0
    assert predict.main([str(tmp_path / "sm"), photo, "--json", "-q"]) == 0
    exported = dict(last_json(capsys.readouterr().out)["predictions"][0]["top"])
    assert exported.keys() == from_run.keys()
    assert max(abs(exported[k] - from_run[k]) for k in exported) < 1e-3


@pytest.mark.parametrize("family", ["dinov2", "vit", "clip", "siglip"])
def test_unfreeze_counts_a_hub_encoders_transformer_blocks(family, presets, capsys):
    """--unfreeze 1 trains the last block and what follows it (final norm, SigLIP's pooling head), not the
    first block or the patch embedding; 'all' trains the embedding too; 3 of 2 blocks is refused."""
    from features.models import create_backbone, get_spec
    from features.train import model as training

    name = f"hub:{presets[family]}"
    network = create_backbone(name, pooling=None).get_layer(get_spec(name).slug)
    counted, below, word = training.units(network)
    assert word == "transformer blocks" and len(counted) == 2 and below

    def trained():
        return {id(v) for v in network.trainable_weights}

    every = trained()  # as built, everything trains (but position ids and the like)

    def ids(layers):
        return {id(v) for layer in layers for v in layer.weights} & every

    assert training.set_trainable(network, "1") == 1
    assert trained() == ids(counted[1]) and not trained() & (ids(counted[0]) | ids(below))
    assert training.set_trainable(network, "0") == 0 and not trained()
    assert training.set_trainable(network, "all") == 2
    assert trained() == every and ids(below) and ids(counted[0])
    with pytest.raises(training.UsageError, match="has only 2 transformer blocks"):
        training.unfrozen_count(network, "3")


@pytest.mark.slow
def test_finetune_unfreezes_the_last_blocks_of_a_hub_encoder(presets, tmp_path, capsys):
    """By default a hub encoder trains its last 2 transformer blocks (20 layers would be a whole small ViT)."""
    photos = make_image_folder(tmp_path / "pets", per_class=6)
    code = finetune.main(["--data-dir", str(photos), "--backbone", f"hub:{presets['vit']}",
                          "--epochs", "1", "--head-epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "r"),
                          "--json", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    row = last_json(out)
    assert row["unfrozen_layers"] == 2 and row["unfreeze"] == "2"


def test_hub_presets_take_their_own_size_and_weights(presets, capsys):
    backbone = f"hub:{presets['vit']}"
    assert extract.main(["--backbone", backbone, "--image-size", "96", "--data-dir", "x"]) == 2
    assert f"takes {SIZE} pixels, its own size" in capsys.readouterr().err
    assert extract.main(["--backbone", backbone, "--weights", "/etc/hosts", "--data-dir", "x"]) == 2
    assert "loads its preset's own weights" in capsys.readouterr().err


def test_a_remote_preset_offline_fails_in_seconds_with_the_way_on(offline, capsys):
    from features.models import hub

    hub.hub_facts.cache_clear()
    start = time.monotonic()
    assert extract.main(["--backbone", "hub:dinov2_base", "--data-dir", "x"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - start < 20 and "cannot be reached" in err and "save_to_preset" in err


def test_a_preset_that_is_not_an_image_encoder_is_refused(tmp_path, capsys):
    folder = tmp_path / "bert"
    folder.mkdir()
    keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=1, hidden_dim=8,
                                  intermediate_dim=16).save_to_preset(str(folder))
    assert extract.main(["--backbone", f"hub:{folder}", "--data-dir", "x"]) == 2
    assert "hub backbones are image encoders" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dinov2", "vit", "clip", "siglip"])
def test_each_family_exports_or_names_the_format_that_works(family, presets, tmp_path, capsys):
    """SavedModel always; TFLite and ONNX where their converters and runtimes take the graph, else one line
    naming the formats that work. What this printed is the README's table of families and formats."""
    photos = make_image_folder(tmp_path / "pets", per_class=6)
    assert extract.main(["--data-dir", str(photos), "--backbone", f"hub:{presets[family]}", "--out",
                         str(tmp_path / "emb"), "-q"]) == 0
    assert classify.main(["--embeddings-dir", str(tmp_path / "emb"), "--out", str(tmp_path / "runs"), "--json",
                          "-q", "--n-jobs", "1"]) == 0
    run = last_json(capsys.readouterr().out)["run_dir"]
    results = {}
    for fmt in ("saved_model", "tflite", "onnx"):
        code = export.main([run, "--format", fmt, "--out", str(tmp_path / fmt), "-q"])
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:
            assert f"its network has no {fmt} form" in err and len(err.strip().splitlines()) == 1, err
            assert not (tmp_path / fmt).exists()
        results[fmt] = "exports" if code == 0 else "refused in one line"
    print(f"{family}: {results}")
    assert results["saved_model"] == "exports"


@pytest.mark.slow
def test_an_encoder_onnx_cannot_run_falls_back_to_tensorflow_or_is_refused(presets, tmp_path, capsys):
    """DINOv2's exact GELU (Erf) has no ONNX form by tf2onnx: --runtime auto extracts on TensorFlow, --runtime
    onnx refuses in one line naming the runtime that works. CLIP converts and runs on ONNX Runtime."""
    pytest.importorskip("onnxruntime")
    photos = make_image_folder(tmp_path / "pets", per_class=4)
    base = ["--data-dir", str(photos), "--out", str(tmp_path / "emb"), "--json", "-q"]
    assert extract.main([*base, "--backbone", f"hub:{presets['dinov2']}", "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "has no ONNX form" in err and "give --runtime tf" in err and len(err.strip().splitlines()) == 1
    assert extract.main([*base, "--backbone", f"hub:{presets['dinov2']}"]) == 0
    assert last_json(capsys.readouterr().out)["runtime"] == "tf"
    assert extract.main([*base, "--backbone", f"hub:{presets['clip']}"]) == 0
    assert last_json(capsys.readouterr().out)["runtime"] == "onnx"
