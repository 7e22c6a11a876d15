"""Building a registry backbone: input scaling inside the model, pooling, flip averaging, one graph.

``create_backbone(name, weights=, image_size=, pooling=)`` returns a ``keras.Model`` that takes
raw RGB batches in 0-255 and returns pooled embeddings. Each family's own input scaling is
a layer inside the model (:class:`Preprocess`), so no caller can feed the wrong scaling.
:func:`embedding_function` makes the frozen inference graph that extraction runs.
"""

from __future__ import annotations

from .registry import check_pooling, check_tta, resolve_backbone

PREPROCESSING = ("caffe", "tf", "torch", "none", "lite", "rescale")


def _keras_preprocess_layer():
    import keras

    @keras.saving.register_keras_serializable(package="features")
    class Preprocess(keras.layers.Layer):
        """Maps raw 0-255 RGB to the scaling the backbone was trained with."""

        def __init__(self, mode: str, **kwargs):
            super().__init__(**kwargs)
            if mode not in PREPROCESSING:
                raise ValueError(f"unknown preprocessing mode {mode!r}")
            self.mode = mode

        def call(self, x):
            x = keras.ops.cast(x, self.compute_dtype)
            if self.mode == "lite":
                return (x - 127.0) / 128.0
            if self.mode == "rescale":
                return x / 255.0
            if self.mode == "none":
                return x
            return keras.applications.imagenet_utils.preprocess_input(x, mode=self.mode)

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return Preprocess


_PREPROCESS = None


def preprocess_layer(mode: str, **kwargs):
    """A :class:`Preprocess` layer (the class is made once, on first use, to keep imports lazy)."""
    global _PREPROCESS
    if _PREPROCESS is None:
        _PREPROCESS = _keras_preprocess_layer()
    return _PREPROCESS(mode, **kwargs)


def create_backbone(backbone, *, weights: str = "imagenet", image_size: int | None = None,
                    pooling: str | None = "avg", tta: str = "none"):
    """Build a frozen-feature extractor that takes raw 0-255 RGB.

    Args:
        backbone: a :class:`~features.models.registry.Backbone` from ``resolve_backbone``, or
            a registry name (``vgg19``, ``efficientnetb0``, ``efficientnet_lite0``, ...)
            resolved here with ``weights`` and ``image_size``.
        weights: "imagenet" (Keras downloads and caches; the lite backbones load from their
            pip package, offline), "none" (random initialisation) or the path of a weights
            file for the network without its classifier (``.pth`` for the lite backbones).
        image_size: square input size in pixels; None for the backbone's default.
        pooling: "avg", "max", or None for the unpooled 4-D feature map.
        tta: "flip": the embedding is the mean of the image's and its left-right mirror's
            (test-time augmentation inside the graph, so caches, predict.py and exports
            all compute it the same way); "none": the image's own.

    Returns:
        A ``keras.Model`` named ``<slug>_backbone`` mapping (N, size, size, 3) float images in
        0-255 to (N, width) embeddings; the network itself is its layer named ``spec.slug`` (the
        registry name; a hub preset's made safe for file and layer names).

    Raises:
        UsageError: unknown name, bad size or missing weights file.
        WeightsUnavailableError: ImageNet weights cannot be had (offline, package missing).
    """
    import keras

    from ..device import report_unusable_gpu

    backbone = resolve_backbone(backbone, image_size, weights)
    if pooling is not None:
        check_pooling(pooling)
    check_tta(tta)
    report_unusable_gpu()
    base = backbone.spec.factory(backbone, pooling)
    base.name = backbone.spec.slug
    size = backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    preprocess = preprocess_layer(backbone.spec.preprocessing, name="preprocess")
    outputs = base(preprocess(inputs))
    if tta == "flip":
        mirrored = base(preprocess(keras.ops.flip(inputs, axis=2)))  # axis 2: left-right
        outputs = keras.layers.Average(name="flip_average")([outputs, mirrored])
    return keras.Model(inputs, outputs, name=f"{backbone.spec.slug}_backbone")


def create_embedder(backbone, pooling: str = "avg", *, tta: str = "none", seed: int = 0):
    """The network an extraction runs, built the same way in every process that runs one.

    With random weights (``weights="none"``) Keras is seeded first, so every run, every
    resumed run and every Ray actor builds the same random network.
    """
    import keras

    backbone = resolve_backbone(backbone)
    if backbone.weights == "none":
        keras.utils.set_random_seed(seed)
    return create_backbone(backbone, pooling=pooling, tta=tta)


def embedding_function(model, image_size: int, freeze: bool = True):
    """``model`` in inference mode as one graph, traced once, for batches of any length.

    A fixed signature with a free batch dimension: the short last batch reuses the trace
    instead of tracing again (0.6 s on 2 cores for EfficientNet-Lite0). With ``freeze``
    the weights become constants of the graph, so TensorFlow's graph optimiser folds each
    BatchNormalization into its convolution and fuses the activations: about 1.4x the
    images per second of the same Keras model on 2 cores, outputs equal to within 1e-5
    (``benchmarks/performance.py``, BENCHMARKS.md).
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.float32)])
    def embed(images):
        return model(images, training=False)

    if not freeze:
        return embed
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(embed.get_concrete_function())

    def run(images):
        return frozen(tf.convert_to_tensor(images, tf.float32))[0]

    return run
