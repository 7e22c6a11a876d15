"""Every registry entry builds and runs; preprocessing and weights behave as documented."""

import numpy as np
import pytest

from features.errors import UsageError, WeightsUnavailableError
from features.models import REGISTRY, create_backbone, get_spec, preprocess_layer


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_builds_and_embeds(name):
    spec = REGISTRY[name]
    size = max(spec.min_size, 32)
    model = create_backbone(name, weights="none", image_size=size)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, spec.width)
    assert np.isfinite(y).all()
    assert model.get_layer(spec.name) is not None  # the network is reachable by its name


def test_unpooled_and_max_pooled_outputs():
    x = np.full((1, 64, 64, 3), 128, "float32")
    fmap = np.asarray(create_backbone("efficientnet_lite0", weights="none", image_size=64, pooling=None)(x))
    assert fmap.shape == (1, 2, 2, 1280)
    pooled = np.asarray(create_backbone("efficientnet_lite0", weights="none", image_size=64, pooling="max")(x))
    assert pooled.shape == (1, 1280)


@pytest.mark.parametrize("name,module", [("vgg19", "vgg19"), ("resnet50", "resnet"),
                                         ("inceptionv3", "inception_v3"), ("densenet121", "densenet"),
                                         ("mobilenetv2", "mobilenet_v2")])
def test_preprocessing_matches_keras_own(name, module):
    import keras

    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = np.asarray(preprocess_layer(get_spec(name).preprocessing)(x))
    theirs = getattr(keras.applications, module).preprocess_input(x.copy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_lite_and_efficientnet_scaling():
    x = np.array([[[[0.0, 127.0, 255.0]]]], "float32")
    np.testing.assert_allclose(np.asarray(preprocess_layer("lite")(x)), [[[[-127 / 128, 0, 1]]]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(preprocess_layer("none")(x)), x)  # B0-B7 rescale inside


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(UsageError, match="vgg19.*efficientnet_lite0"):
        get_spec("vgg20")


def test_image_size_the_backbone_cannot_take():
    with pytest.raises(UsageError, match="at least 75"):
        create_backbone("inceptionv3", weights="none", image_size=40)


def test_keras_imagenet_weights_offline_fail_fast_with_a_way_on(offline, monkeypatch, tmp_path):
    import keras.src.utils.file_utils as file_utils

    monkeypatch.setattr(file_utils.config, "keras_home", lambda: str(tmp_path))  # nothing cached
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("mobilenet", weights="imagenet", image_size=64)
    message = str(err.value)
    assert "weights=PATH" in message and "efficientnet_lite0" in message


@pytest.mark.parametrize("name", ["mobilenet", "efficientnet_lite0"])
def test_weights_from_a_local_file(name, tmp_path):
    source = create_backbone(name, weights="none", image_size=64)
    path = tmp_path / "mine.weights.h5"
    source.get_layer(name).save_weights(path)
    loaded = create_backbone(name, weights=str(path), image_size=64)
    x = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(source(x)), rtol=1e-5, atol=1e-5)


def test_missing_weights_file():
    with pytest.raises(UsageError, match="no such file"):
        create_backbone("mobilenet", weights="/nonexistent/w.h5", image_size=64)


def test_a_backbone_is_resolved_once_with_its_weights_file():
    from features.models import Backbone, resolve_backbone
    from features.models.lite import VARIANTS

    lite = resolve_backbone("EfficientNet_Lite1")
    assert isinstance(lite, Backbone) and lite.name == "efficientnet_lite1" and lite.image_size == 240
    assert lite.weights_file.suffix == ".pth" and len(lite.weights_sha256) == 64
    assert resolve_backbone(lite) is lite  # handed down, not looked up again
    assert resolve_backbone("vgg19", weights="none").weights_file is None
    assert {n: REGISTRY[n].default_size for n in VARIANTS} == {n: v[2] for n, v in VARIANTS.items()}
    assert [n for n, s in REGISTRY.items() if s.offline_weights] == list(VARIANTS)
    with pytest.raises(UsageError, match="^image_size 16: efficientnet_lite1 needs at least 32"):
        resolve_backbone(lite, image_size=16)
