"""The course's Keras model, what of it trains, and how it is compiled.

The model is the course's: the registry backbone (raw 0-255 in, preprocessing inside),
then GlobalAveragePooling2D -> Dense(128, relu) -> Dropout(0.1) -> softmax (or one sigmoid
neuron for two classes). Pretrained bases are called in inference mode and their
BatchNormalization layers stay frozen; training from scratch trains everything.
"""

from __future__ import annotations

import keras

from ..errors import UsageError
from .config import HEAD_DROPOUT, HEAD_UNITS, TrainConfig


def base_layers(network) -> list:
    """The network's layers that count for ``unfreeze`` (its input layer does not)."""
    return [layer for layer in network.layers if not isinstance(layer, keras.layers.InputLayer)]


def units(network) -> tuple[list[list], list, str]:
    """What ``unfreeze`` counts in ``network``, first to last, and what stays frozen below it.

    Returns:
        (units, below, word): for a Keras network each unit is one layer (its input layer not
        counted) and ``below`` is empty; for a KerasHub encoder each unit is one transformer block,
        the last holding what follows the blocks too (final norm, pooling head), and ``below``
        what runs before them (image converter, patch embedding), trained only with ``all``.
        ``word`` names the unit in messages.
    """
    from ..models.hub import transformer_blocks

    cut = transformer_blocks(network)
    if cut is None:
        return [[layer] for layer in base_layers(network)], [], "layers"
    before, blocks, after = cut
    return [[block] for block in blocks[:-1]] + [[blocks[-1], *after]], before, "transformer blocks"


def unfrozen_count(network, unfreeze: str) -> int:
    """How many of the network's last units (:func:`units`) ``unfreeze`` names; refuses more than it has."""
    counted, _, word = units(network)
    n = len(counted) if unfreeze == "all" else int(unfreeze)
    if n > len(counted):
        raise UsageError(f"{{unfreeze}} {unfreeze}: {network.name} has only {len(counted)} {word}")
    return n


def set_trainable(network, unfreeze: str, scratch: bool = False) -> int:
    """Freeze the network except its last ``unfreeze`` units (:func:`units`); return how many are unfrozen.

    BatchNormalization layers stay frozen when fine-tuning: with their statistics
    updated on a small dataset, the first epoch wrecks the pretrained features.
    Recompile the model after calling this, or the change has no effect.
    """
    counted, below, _ = units(network)
    network.trainable = True
    if scratch:
        return len(counted)
    n = unfrozen_count(network, unfreeze)
    for i, unit in enumerate(counted):
        for layer in unit:
            layer.trainable = i >= len(counted) - n and not isinstance(layer, keras.layers.BatchNormalization)
    for layer in below:  # a hub encoder's embeddings: with "all" only
        layer.trainable = unfreeze == "all"
    return n


def unfrozen_words(network, unfreeze: str, scratch: bool = False) -> str:
    """What training ``unfreeze`` (or from scratch) trains of ``network``, in words: "2 transformer blocks", "all 2
    transformer blocks and the 4 layers before them (patch and position embeddings)", "20 layers"."""
    counted, below, word = units(network)
    if unfreeze == "0" and not scratch:
        return "no base layer"
    if scratch or unfreeze == "all":
        before = f" and the {len(below)} layers before them (patch and position embeddings)" if below else ""
        return f"all {len(counted)} {word}{before}"
    n = int(unfreeze)
    return f"{n} {word[:-1] if n == 1 else word}"


def split_frozen_prefix(network, n_unfrozen: int):
    """Cut ``network`` into a frozen prefix and the rest, at a single tensor.

    The cut is the latest point at or before the first of the last ``n_unfrozen`` layers
    where one tensor carries everything the later layers need (a residual block is never
    cut inside). Both parts share the network's layer objects: training the suffix trains
    the network.

    Returns:
        (prefix, suffix): ``keras.Model`` from the network's input to the cut tensor, and
        from the cut tensor to the network's output. The suffix holds at least
        ``n_unfrozen`` layers; (None, network) when nothing before them can be cut off.
    """
    layers = base_layers(network)
    first = len(layers) - n_unfrozen
    for k in range(min(first, len(layers) - 1), 0, -1):
        cut = layers[k].input
        if not isinstance(cut, keras.KerasTensor):  # a layer of several inputs: no single-tensor cut
            continue
        try:
            suffix = keras.Model(cut, network.output, name=f"{network.name}_suffix")
        except ValueError:  # the later layers need a tensor from before the cut
            continue
        if len(base_layers(suffix)) != len(layers) - k:
            continue
        return keras.Model(network.input, cut, name=f"{network.name}_prefix"), suffix
    return None, network


def build_model(config: TrainConfig, backbone, n_classes: int):
    """The course's classifier on the registry backbone.

    Args:
        backbone: the :class:`~features.models.registry.Backbone` (or a registry name, resolved
            with the config's weights and image size).

    Returns:
        (model, network): the whole model, and the backbone network inside it (the layer
        whose last layers ``unfreeze`` counts).
    """
    from ..models.build import create_backbone
    from ..models.registry import resolve_backbone

    backbone = resolve_backbone(backbone, config.image_size, config.weights)
    image_size = backbone.image_size
    base = create_backbone(backbone, pooling=None)
    network = base.get_layer(backbone.spec.slug)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    if config.augment != "none":
        x = augmentation(config.augment, config.seed)(x)
    # A pretrained base runs in inference mode even while its last layers train.
    x = base(x, training=None if config.scratch else False)
    # A feature map is pooled here; a hub encoder's output is already its family's embedding.
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x) if len(x.shape) == 4 else \
        keras.layers.Identity(name="pool")(x)
    x = keras.layers.Dense(HEAD_UNITS, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(HEAD_DROPOUT, name="dropout")(x)
    if n_classes == 2 and config.binary_output != "softmax":  # unset means the default, sigmoid
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="output")(x)
    else:
        outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.spec.slug}_classifier"), network


def augmentation(kind: str, seed: int):
    """The training images' random changes (Keras preprocessing layers, off at inference).

    "standard": flip, rotation up to 5% of a turn, zoom up to 10%. "strong": flip, then
    RandAugment (two operations drawn per image from Keras' list, strength 0.3).
    """
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    if kind == "strong":
        layers = [flip, keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.3, seed=seed)]
    else:
        layers = [flip, keras.layers.RandomRotation(0.05, seed=seed), keras.layers.RandomZoom(0.1, seed=seed)]
    return keras.Sequential(layers, name="augment")


def frozen_prefix_models(model, network, n_unfrozen: int):
    """The classifier cut where its frozen prefix ends, for training on cached activations.

    The prefix (preprocessing and the frozen first layers of the base, run in inference mode) maps each
    image to the same activations every epoch, so they are computed once; the model's augmentation, where it
    has one, is left out of it (cached views apply it before the prefix, once a view:
    :func:`features.train.run.frozen_activations`). With no layer unfrozen the cut is after pooling.

    Returns:
        (prefix, trainable, suffix): ``prefix`` maps images to activations; ``trainable``
        maps activations to class probabilities through the same layer objects as
        ``model`` (training it trains ``model``); ``suffix`` is the part of the base inside
        it, the network whose last layers ``unfreeze`` counts.

    Raises:
        UsageError: no frozen layer comes before the unfrozen ones, so nothing can be cached.
    """
    # the base (the augmentation, where the model has one, is a keras.Sequential too: it runs before the cut)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "augment")
    image = keras.Input(model.input.shape[1:], name="image")
    x = backbone.get_layer("preprocess")(image)
    head = [model.get_layer(name) for name in ("pool", "dense", "dropout", "output")]
    if n_unfrozen == 0:
        prefix = keras.Model(image, head[0](network(x, training=False)), name="frozen_prefix")
        suffix, head = network, head[1:]
        activations = keras.Input(prefix.output.shape[1:], name="activations")
        y = activations
    else:
        if units(network)[2] != "layers":  # a hub encoder's blocks run inside one layer: no tensor between them
            raise UsageError(f"{{cache_frozen}}: with {{unfreeze}} {n_unfrozen} the frozen transformer blocks of "
                             f"{network.name} would come first, but a KerasHub encoder runs its blocks inside one "
                             "layer, with no tensor between them to cache; give {unfreeze} 0 (the whole encoder "
                             "cached) or leave {cache_frozen} out")
        cut_prefix, suffix = split_frozen_prefix(network, n_unfrozen)
        if cut_prefix is None:
            raise UsageError(f"{{cache_frozen}}: with {{unfreeze}} {n_unfrozen} no frozen layers come before "
                             "the unfrozen ones, so there is nothing to cache; unfreeze fewer layers")
        prefix = keras.Model(image, cut_prefix(x, training=False), name="frozen_prefix")
        activations = keras.Input(prefix.output.shape[1:], name="activations")
        y = suffix(activations, training=False)
    for layer in head:
        y = layer(y)
    return prefix, keras.Model(activations, y, name=f"{model.name}_on_activations"), suffix


@keras.saving.register_keras_serializable(package="features")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy on integer labels with label smoothing (Keras' sparse loss has none)."""

    def __init__(self, label_smoothing: float = 0.0, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), y_pred.shape[-1])
        return keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def loss(sigmoid: bool, label_smoothing: float):
    if not label_smoothing:
        return "binary_crossentropy" if sigmoid else "sparse_categorical_crossentropy"
    if sigmoid:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return SmoothedSparseCrossentropy(label_smoothing)


def compile_model(model, lr: float, *, sigmoid: bool, weight_decay: float = 0.0, label_smoothing: float = 0.0) -> None:

    objective = loss(sigmoid, label_smoothing)
    metric = "binary_accuracy" if sigmoid else "sparse_categorical_accuracy"
    optimizer = keras.optimizers.AdamW(lr, weight_decay=weight_decay) if weight_decay else keras.optimizers.Adam(lr)
    model.compile(optimizer=optimizer, loss=objective, metrics=[keras.metrics.get(metric)])
