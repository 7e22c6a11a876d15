"""KerasHub encoders as backbones (hub:PRESET): tiny randomly initialised presets of each family, saved with
save_to_preset into a folder, run through the toolkit's real code paths offline."""

import time
from pathlib import Path

import numpy as np
import pytest

from features.cli import classify, export, extract, finetune, predict
from helpers import last_json, make_image_folder, write_image

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
    # A photo of the network's own size: its resize is the identity, so the run's float pixels and the export's
    # uint8 ones are the same (a resized photo's rounding moves a random encoder's probabilities by up to ~1e-3)
    photo = str(write_image(tmp_path / "exact.png", seed=7, size=(SIZE, SIZE)))
    assert predict.main([run, photo, "--json", "-q"]) == 0
    from_run = dict(last_json(capsys.readouterr().out)["predictions"][0]["top"])
    assert predict.main([run, photo, "--explain", str(tmp_path / "heat")]) == 2  # no map: one line
    err = capsys.readouterr().err
    assert "is a KerasHub encoder: its embedding is a class token" in err and len(err.strip().splitlines()) == 1
    assert export.main([run, "--format", "saved_model", "--out", str(tmp_path / "sm"), "-q"]) == 0
    assert predict.main([str(tmp_path / "sm"), photo, "--json", "-q"]) == 0
    exported = dict(last_json(capsys.readouterr().out)["predictions"][0]["top"])
    assert exported.keys() == from_run.keys()
    assert max(abs(exported[k] - from_run[k]) for k in exported) < 1e-5


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

    hub.preset_facts.cache_clear()
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


# --- a preset folder is what is copied from another machine: checked before KerasHub reads it --------------

def _copy(presets, family, tmp_path):
    import shutil

    return shutil.copytree(presets[family], tmp_path / f"copied-{family}")


def _refused(capsys, folder, *more):
    from features.models import hub

    hub.preset_facts.cache_clear()
    code = extract.main(["--backbone", f"hub:{folder}", "--data-dir", "x", *more])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("name", ["model.weights.h5", "config.json", "metadata.json"])
@pytest.mark.parametrize("kind", ["a link to /dev/zero", "a FIFO"])
def test_a_preset_file_that_is_a_device_or_a_fifo_is_refused_before_it_is_read(name, kind, presets, tmp_path,
                                                                               capsys):
    """config.json a link to /dev/zero took 4.7 GB before a MemoryError; model.weights.h5 one hung the extraction
    (its SHA-256 keys the cache): every file of the folder is checked to be a regular file first."""
    import os

    folder = _copy(presets, "dinov2", tmp_path)
    (folder / name).unlink()
    if kind == "a FIFO":
        os.mkfifo(folder / name)
    else:
        (folder / name).symlink_to("/dev/zero")
    err = _refused(capsys, folder)
    what = "a FIFO (named pipe)" if kind == "a FIFO" else "a device"
    assert f"its file {name} is not a regular file but {what}" in err


@pytest.mark.parametrize("edit,says", [
    ({"hidden_dim": 10**6}, "its config's hidden_dim is 1000000; a preset of this toolkit's families has a whole "
                            "number from 1 to 16,384 there"),
    ({"num_layers": 10**5}, "num_layers is 100000"),
    ({"patch_size": 0}, "patch_size is 0"),
    ({"patch_size": 7}, "image size 64 is not a whole number of 7-pixel patches"),
    ({"hidden_dim": "32"}, "hidden_dim is '32'"),
    ({"num_heads": None}, "does not say its num_heads"),
    ({"image_shape": [10**6, 10**6, 3]}, "image_shape height is 1000000"),
    ({"patch_size": 1, "image_shape": [512, 512, 3], "position_embedding_shape": [512, 512, 3]},
     "262,144 patches an image"),
    # hostile pass five: Keras allocated positions x width and registers x width floats while it built
    ({"position_embedding_shape": [100000, 100000, 3]}, "position_embedding_shape height is 100000"),
    ({"num_register_tokens": 10**8}, "num_register_tokens is 100000000; a preset of this toolkit's families has a "
                                     "whole number from 0 to 1,024 there"),
    ({"num_register_tokens": -1}, "num_register_tokens is -1"),
    ({"embedding_rows": 4096}, "holds 'embedding_rows', not a setting this toolkit knows for it"),
    ({"use_mask_token": [0] * 10**4}, "its config's use_mask_token is [0, 0"),
])
def test_a_preset_config_out_of_bounds_is_refused_before_anything_is_built(edit, says, presets, tmp_path, capsys,
                                                                           monkeypatch):
    """hidden_dim 10**6 crashed the process (SIGSEGV), num_layers 10**5 built for minutes, patch_size 0 divided by
    zero: the sizes are bounded from the config, before KerasHub builds anything."""
    import json

    folder = _copy(presets, "dinov2", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    for key, value in edit.items():
        if value is None:
            config["config"].pop(key)
        else:
            config["config"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", lambda *a, **k: pytest.fail("built"))
    assert says in _refused(capsys, folder, "--weights", "none")


def test_a_network_past_the_memory_is_refused_and_the_estimate_is_keras_hubs_count(presets, tmp_path, capsys,
                                                                                   monkeypatch):
    """The estimate from the config is within 20% of KerasHub's own count for every family (SigLIP's pooling head
    is the most it leaves out), and a network whose float32 weights pass the memory available is refused."""
    import json

    from features import memory
    from features.models import hub_config

    for family, folder in presets.items():
        config = json.loads((folder / "config.json").read_text())
        sizes = hub_config.check_config(str(folder), config["class_name"], config)
        model = keras_hub.models.Backbone.from_preset(str(folder), load_weights=False)
        assert 0.8 <= hub_config.estimate_parameters(sizes) / model.count_params() <= 1.05, family
    monkeypatch.setattr(memory, "available_memory", lambda: 100_000)
    assert "past what this machine can build" in _refused(capsys, _copy(presets, "vit", tmp_path), "--weights",
                                                          "none")


@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_a_two_tower_presets_text_tower_is_bounded_and_counted(tower, tmp_path):
    """A whole CLIP or SigLIP preset builds its text tower too: its sizes are bounded, its class is its family's,
    and the whole network's estimate is within 20% of KerasHub's count."""
    import json

    from features.errors import UsageError
    from features.models import hub_config

    kind = {"clip": ("CLIPVisionEncoder", "CLIPTextEncoder", "CLIPBackbone", {"projection_dim": 16}),
            "siglip": ("SigLIPVisionEncoder", "SigLIPTextEncoder", "SigLIPBackbone", {})}[tower]
    vision = getattr(keras_hub.models, kind[0])(patch_size=16, hidden_dim=32, intermediate_dim=64,
                                                image_shape=(SIZE, SIZE, 3), num_layers=2, num_heads=2)
    text = getattr(keras_hub.models, kind[1])(vocabulary_size=5000, embedding_dim=32, hidden_dim=32, num_layers=2,
                                              num_heads=2, intermediate_dim=64)
    model = getattr(keras_hub.models, kind[2])(vision, text, **kind[3])
    folder = tmp_path / tower
    model.save_to_preset(str(folder))
    config = json.loads((folder / "config.json").read_text())
    sizes = hub_config.check_config(str(folder), kind[2], config)
    inner = config["config"]
    n = hub_config.network_parameters(sizes, inner["vision_encoder"]["config"], text=inner["text_encoder"]["config"],
                                      projection=inner.get("projection_dim") or 0)
    assert 0.8 <= n / model.count_params() <= 1.2, n / model.count_params()
    for edit, says in ((("text_encoder", "vocabulary_size", 10**9), "vocabulary_size is 1000000000"),
                       (("text_encoder", "max_sequence_length", 0), "max_sequence_length is 0"),
                       (("text_encoder", "class_name", "DINOV2Backbone"), "text_encoder is DINOV2Backbone, not the"),
                       (("vision_encoder", "position_table", 7), "holds 'position_table'")):
        edited = json.loads(json.dumps(config))
        where, key, value = edit
        (edited["config"][where] if key == "class_name" else edited["config"][where]["config"])[key] = value
        with pytest.raises(UsageError, match=says):
            hub_config.check_config(str(folder), kind[2], edited)


def test_the_memory_check_is_the_processs_own_limit_not_only_the_machines(tmp_path):
    """20 GB of parameters under a 6 GB cap ended in a TensorFlow traceback: the check compared with the
    machine's memory. Under an address-space limit (ulimit -v) the process's own headroom is what counts."""
    import subprocess
    import sys

    script = (
        "import resource, psutil\n"
        "vms = psutil.Process().memory_info().vms\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vms + 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
        "from features.memory import available_memory\n"
        "from features.models.hub_config import Sizes, check_memory\n"
        "from features.errors import UsageError\n"
        "print(available_memory())\n"
        "try:\n"
        "    check_memory('big', 500_000_000)\n"  # 2 GB of float32: past the 1 GiB left under the cap
        "except UsageError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert done.returncode == 0, done.stderr
    first, said = done.stdout.splitlines()[:2]
    assert int(first) <= 2**30 and "past what this machine can build" in said and "available to this process" in said


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroups_memory_limit_is_the_headroom(version, tmp_path):
    from features.memory import _cgroup_headroom

    root = tmp_path / "cgroup"
    if version == 2:
        (root / "app" / "job").mkdir(parents=True)
        (root / "app" / "memory.max").write_text("6000000000\n")
        (root / "app" / "memory.current").write_text("1000000000\n")
        (root / "app" / "job" / "memory.max").write_text("max\n")
        (root / "app" / "job" / "memory.current").write_text("500000000\n")
        (tmp_path / "cgroups").write_text("0::/app/job\n")
    else:
        (root / "memory" / "job").mkdir(parents=True)
        (root / "memory" / "job" / "memory.limit_in_bytes").write_text("6000000000\n")
        (root / "memory" / "job" / "memory.usage_in_bytes").write_text("1000000000\n")
        (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        (root / "memory" / "memory.usage_in_bytes").write_text("7000000000\n")
        (tmp_path / "cgroups").write_text("4:memory:/job\n1:cpu:/\n0::/\n")
    assert _cgroup_headroom(str(root), str(tmp_path / "cgroups")) == 5_000_000_000
    (tmp_path / "cgroups").write_text("0::/elsewhere\n")
    assert _cgroup_headroom(str(root), str(tmp_path / "cgroups")) is None


def test_weights_of_another_size_than_the_configs_network_are_refused(presets, tmp_path, capsys):
    """A config that claims 12 blocks beside the weights of 2: the two are of different networks."""
    import json

    folder = _copy(presets, "vit", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["config"]["num_layers"] = 12
    config["config"]["hidden_dim"] = 256
    (folder / "config.json").write_text(json.dumps(config))
    assert "the config and the weights are of two networks" in _refused(capsys, folder)


@pytest.mark.parametrize("kind", ["a file", "a device", "missing"])
def test_a_hub_path_that_is_no_folder_says_so(kind, tmp_path, capsys):
    """`hub:` with a regular file, a device or a missing folder said 'www.kaggle.com cannot be reached'."""
    path = {"a file": tmp_path / "preset.txt", "a device": "/dev/null", "missing": tmp_path / "nowhere"}[kind]
    if kind == "a file":
        path.write_text("x")
    err = _refused(capsys, path)
    assert "cannot be reached" not in err
    assert {"a file": "a file, not a folder", "a device": "a device, not a folder",
            "missing": "no such folder"}[kind] in err


@pytest.mark.slow
def test_a_preset_with_weights_of_another_family_is_refused_in_one_short_line(presets, tmp_path, capsys):
    """KerasHub's message for it ran to a kilobyte with literal \\n in it: its first line, shortened."""
    import shutil

    folder = _copy(presets, "dinov2", tmp_path)
    shutil.copy(presets["vit"] / "model.weights.h5", folder / "model.weights.h5")
    photos = make_image_folder(tmp_path / "pets", per_class=2)
    from features.models import hub

    hub.preset_facts.cache_clear()
    assert extract.main(["--backbone", f"hub:{folder}", "--data-dir", str(photos), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot load the preset" in err
    assert "\\n" not in err and len(err) < 500


@pytest.mark.slow
def test_finetune_says_what_it_trains_of_a_hub_encoder_and_why_it_cannot_cache_between_blocks(presets, tmp_path,
                                                                                              capsys):
    """`--unfreeze all` said "2 base layers trained", as `--unfreeze 2` did, though it trains the embeddings too;
    `--cache-frozen --unfreeze 1` said no frozen layers come first, though block 0 and the embeddings do."""
    photos = make_image_folder(tmp_path / "pets", per_class=6)
    base = ["--data-dir", str(photos), "--backbone", f"hub:{presets['vit']}", "--epochs", "1", "--head-epochs", "1",
            "--batch-size", "4", "--out", str(tmp_path / "r"), "-q"]
    assert finetune.main([*base, "--unfreeze", "all"]) == 0
    out = capsys.readouterr().out
    assert "all 2 transformer blocks and the" in out and "layers before them (patch and position embeddings) of " \
           "the base trained" in out
    assert finetune.main(base) == 0
    assert "2 transformer blocks of the base trained" in capsys.readouterr().out
    assert finetune.main([*base, "--cache-frozen", "--no-augment", "--unfreeze", "1"]) == 2
    err = capsys.readouterr().err
    assert "a KerasHub encoder runs its blocks inside one layer" in err and "--unfreeze 0" in err
    runs = sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir())
    assert runs and all("hub-vit-" in name and ":" not in name for name in runs)


def test_a_two_tower_presets_text_weights_do_not_count_against_it(tmp_path):
    """A whole CLIP preset holds its text encoder's weights too: the vision tower's estimate bounds the file from
    below only (a text tower a hundred times the vision tower's here)."""
    from features.models import hub

    vision = keras_hub.models.CLIPVisionEncoder(patch_size=16, hidden_dim=32, intermediate_dim=64,
                                                image_shape=(SIZE, SIZE, 3), num_layers=2, num_heads=2)
    text = keras_hub.models.CLIPTextEncoder(vocabulary_size=200_000, embedding_dim=32, hidden_dim=32, num_layers=2,
                                            num_heads=2, intermediate_dim=64)
    folder = tmp_path / "clip"
    keras_hub.models.CLIPBackbone(vision, text, projection_dim=16).save_to_preset(str(folder))
    weights = (folder / "model.weights.h5").stat().st_size
    n = hub.estimate_parameters(hub.preset_facts(f"hub:{folder}")[1])
    assert weights > hub.WEIGHT_BYTES[1] * n + hub.WEIGHTS_OVERHEAD  # past a vision tower's bound
    assert hub.weights_path(str(folder)) == folder / "model.weights.h5"
