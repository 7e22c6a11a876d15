"""End-to-end Keras training: fine-tuning with the last N layers unfrozen, and from scratch.

The model is the course's: the registry backbone (raw 0-255 in, preprocessing inside),
then GlobalAveragePooling2D -> Dense(128, relu) -> Dropout(0.1) -> softmax (or one sigmoid
neuron for two classes). Pretrained bases are called in inference mode and their
BatchNormalization layers stay frozen; training from scratch trains everything.
"""

from __future__ import annotations

import csv
import os
import time
import warnings

import keras
import numpy as np

from .errors import UsageError
from .train_config import HEAD_DROPOUT, HEAD_UNITS, TrainConfig


def base_layers(network) -> list:
    """The network's layers that count for ``unfreeze`` (its input layer does not)."""
    return [layer for layer in network.layers if not isinstance(layer, keras.layers.InputLayer)]


def unfrozen_count(network, unfreeze: str) -> int:
    """How many of the network's last layers ``unfreeze`` names; refuses more than it has."""
    layers = base_layers(network)
    n = len(layers) if unfreeze == "all" else int(unfreeze)
    if n > len(layers):
        raise UsageError(f"{{unfreeze}} {unfreeze}: {network.name} has only {len(layers)} layers")
    return n


def set_trainable(network, unfreeze: str, scratch: bool = False) -> int:
    """Freeze the network except its last ``unfreeze`` layers; return how many are unfrozen.

    BatchNormalization layers stay frozen when fine-tuning: with their statistics
    updated on a small dataset, the first epoch wrecks the pretrained features.
    Recompile the model after calling this, or the change has no effect.
    """
    layers = base_layers(network)
    network.trainable = True
    if scratch:
        return len(layers)
    n = unfrozen_count(network, unfreeze)
    for i, layer in enumerate(layers):
        layer.trainable = i >= len(layers) - n and not isinstance(layer, keras.layers.BatchNormalization)
    return n


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
        backbone: the :class:`~features.backbones.Backbone` (or a registry name, resolved
            with the config's weights and image size).

    Returns:
        (model, network): the whole model, and the backbone network inside it (the layer
        whose last layers ``unfreeze`` counts).
    """
    from .backbones import create_backbone, resolve_backbone

    backbone = resolve_backbone(backbone, config.image_size, config.weights)
    image_size = backbone.image_size
    base = create_backbone(backbone, pooling=None)
    network = base.get_layer(backbone.name)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    if config.augment:
        x = augmentation(config.augmentation, config.seed)(x)
    # A pretrained base runs in inference mode even while its last layers train.
    x = base(x, training=None if config.scratch else False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(HEAD_UNITS, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(HEAD_DROPOUT, name="dropout")(x)
    if n_classes == 2 and config.binary_output != "softmax":  # unset means the default, sigmoid
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="output")(x)
    else:
        outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_classifier"), network


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

    Only valid for a model built without augmentation (:func:`~features.train_config.check_settings`
    refuses the combination): the prefix (preprocessing and the frozen first layers of the
    base, run in inference mode) then maps each image to the same activations every epoch,
    so they are computed once. With no layer unfrozen the cut is after pooling.

    Returns:
        (prefix, trainable, suffix): ``prefix`` maps images to activations; ``trainable``
        maps activations to class probabilities through the same layer objects as
        ``model`` (training it trains ``model``); ``suffix`` is the part of the base inside
        it, the network whose last layers ``unfreeze`` counts.

    Raises:
        UsageError: no frozen layer comes before the unfrozen ones, so nothing can be cached.
    """
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    image = keras.Input(model.input.shape[1:], name="image")
    x = backbone.get_layer("preprocess")(image)
    head = [model.get_layer(name) for name in ("pool", "dense", "dropout", "output")]
    if n_unfrozen == 0:
        prefix = keras.Model(image, head[0](network(x, training=False)), name="frozen_prefix")
        suffix, head = network, head[1:]
        activations = keras.Input(prefix.output.shape[1:], name="activations")
        y = activations
    else:
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


def _loss(sigmoid: bool, label_smoothing: float):
    if not label_smoothing:
        return "binary_crossentropy" if sigmoid else "sparse_categorical_crossentropy"
    if sigmoid:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return SmoothedSparseCrossentropy(label_smoothing)


def _compile(model, lr: float, sigmoid: bool, weight_decay: float = 0.0, label_smoothing: float = 0.0) -> None:

    loss = _loss(sigmoid, label_smoothing)
    metric = "binary_accuracy" if sigmoid else "sparse_categorical_accuracy"
    optimizer = keras.optimizers.AdamW(lr, weight_decay=weight_decay) if weight_decay else keras.optimizers.Adam(lr)
    model.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.get(metric)])


def phase_rate(lr: float, epoch: int, epochs: int, schedule: str = "constant", warmup: int = 0) -> float:
    """The learning rate of epoch ``epoch`` (0-based) of a phase of ``epochs`` epochs.

    A linear warm-up over the first ``warmup`` epochs (lr x (epoch + 1) / (warmup + 1)),
    then ``lr`` ("constant") or a cosine decay from ``lr`` towards 0 over the epochs left
    ("cosine": lr x (1 + cos(pi x t / T)) / 2, t counting from the end of the warm-up).
    """
    import math

    if epoch < warmup:
        return lr * (epoch + 1) / (warmup + 1)
    if schedule == "constant":
        return lr
    t, total = epoch - warmup, max(1, epochs - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * t / total))


def probabilities(model, dataset, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """(row indices, class probabilities) of a dataset of (index, image) batches.

    With ``tta`` "flip", each image's probabilities are the mean of its own and its
    left-right mirror's.
    """
    rows, probs = [], []
    for index, images in dataset:
        p = np.asarray(model(images, training=False), dtype=np.float64)
        if tta == "flip":
            p = (p + np.asarray(model(keras.ops.flip(images, axis=2), training=False), dtype=np.float64)) / 2
        if p.shape[1] == 1:  # one sigmoid neuron: P(class 1)
            p = np.hstack([1 - p, p])
        rows.append(index.numpy())
        probs.append(p)
    return np.concatenate(rows), np.vstack(probs)


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall-clock seconds and metrics into ``log``."""

    def __init__(self, phase: str, log: list, start: float):
        super().__init__()
        self.phase, self.log, self.start = phase, log, start

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs = logs or {}
        acc = next((v for k, v in logs.items() if k.endswith("accuracy") and not k.startswith("val_")), None)
        val_acc = next((v for k, v in logs.items() if k.startswith("val_") and k.endswith("accuracy")), None)
        self.log.append({"epoch": len(self.log) + 1, "phase": self.phase, "seconds": now - self._t,
                         "elapsed": now - self.start, "loss": logs.get("loss"), "accuracy": acc,
                         "val_loss": logs.get("val_loss"), "val_accuracy": val_acc})


class LearningRateLog(keras.callbacks.Callback):
    """Adds the optimizer's learning rate to each epoch's logs (TensorBoard draws it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def write_history(path, history: list[dict]) -> None:
    """The per-epoch history as CSV."""
    fields = ["epoch", "phase", "seconds", "elapsed", "loss", "accuracy", "val_loss", "val_accuracy"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in fields} for row in history)


def plot_history(path, history: list[dict], title: str = "") -> None:
    """Training curves: accuracy and loss against wall-clock seconds."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    t = [row["elapsed"] for row in history]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("accuracy", "loss")):
        ax.plot(t, [row[key] for row in history], "o-", label=f"train {key}")
        ax.plot(t, [row[f"val_{key}"] for row in history], "o-", label=f"val {key}")
        ax.set_xlabel("wall-clock seconds")
        ax.set_ylabel(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def train(model, network, config: TrainConfig, train_ds, val_ds, checkpoint_path, verbose: int = 1,
          log_dir=None) -> dict:
    """Run the phases and leave the best weights (lowest validation loss, or with ``monitor``
    "val_accuracy" the highest validation accuracy) in ``model``.

    Phases: from scratch, one phase with everything trainable at ``scratch_lr``.
    Pretrained: the head alone on the frozen base at ``head_lr`` (``unfreeze`` "0" stops
    here, for ``epochs`` epochs), then the last N layers unfrozen at ``lr`` for ``epochs``.
    The best weights of all phases are checkpointed to ``checkpoint_path`` (.weights.h5).
    With ``log_dir``, TensorBoard logs go there (Keras' own callback): losses, accuracies
    and the learning rate per epoch, the phases one after the other on one epoch axis.

    Returns:
        history (list of per-epoch rows), unfrozen (layer count), best_epoch, train_seconds,
        seconds_to_best.
    """
    sigmoid = model.output.shape[-1] == 1
    history: list[dict] = []
    start = time.perf_counter()

    by_accuracy = config.monitor == "val_accuracy"
    # Keras' name for the validation accuracy of this output, which the callbacks watch
    watched = ("val_binary_accuracy" if sigmoid else "val_sparse_categorical_accuracy") if by_accuracy else "val_loss"

    def best_so_far():
        scored = [row for row in history if row["val_loss"] is not None and np.isfinite(row["val_loss"])]
        if by_accuracy:  # the highest validation accuracy, ties to the lower validation loss
            return max(scored, key=lambda row: (row["val_accuracy"], -row["val_loss"])) if scored else None
        return min(scored, key=lambda row: row["val_loss"]) if scored else None

    def fit(phase: str, epochs: int, lr: float, scheduled: bool = False):
        if epochs <= 0:
            return
        _compile(model, lr, sigmoid, config.weight_decay, config.label_smoothing)  # after any change of `trainable`, or it is ignored
        best = best_so_far()
        callbacks = [
            EpochTimer(phase, history, start),
            keras.callbacks.EarlyStopping(watched, patience=config.patience, mode="max" if by_accuracy else "min"),
            # Only an epoch better than every earlier phase's best replaces the checkpoint.
            keras.callbacks.ModelCheckpoint(str(checkpoint_path), monitor=watched, save_best_only=True,
                                            save_weights_only=True, mode="max" if by_accuracy else "min",
                                            initial_value_threshold=best["val_accuracy" if by_accuracy else
                                                                         "val_loss"] if best else None),
        ]
        if log_dir is not None:
            callbacks += [LearningRateLog(), keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]
        done = len(history)  # this phase's epochs follow the earlier phases' on one axis
        if scheduled and (config.schedule != "constant" or config.warmup_epochs):
            callbacks.insert(0, keras.callbacks.LearningRateScheduler(
                lambda epoch, _: phase_rate(lr, epoch - done, epochs, config.schedule, config.warmup_epochs)))
        with warnings.catch_warnings():
            # The dataset's length is unknown (undecodable files are dropped), so Keras
            # finds its end each epoch and says so; the dataset shuffles itself.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(train_ds, validation_data=val_ds, epochs=done + epochs, initial_epoch=done,
                      callbacks=callbacks, verbose=verbose, shuffle=False)

    if config.scratch:
        unfrozen = set_trainable(network, "all", scratch=True)
        fit("scratch", config.epochs, config.scratch_lr, scheduled=True)
    else:
        network.trainable = False
        unfrozen = 0
        main = config.unfreeze == "0"  # frozen in the graph: the head's phase is the only one
        fit("head", config.epochs if main else config.head_epochs, config.head_lr, scheduled=main)
        if config.unfreeze != "0":
            unfrozen = set_trainable(network, config.unfreeze)
            fit("finetune", config.epochs, config.lr, scheduled=True)
    train_seconds = time.perf_counter() - start
    best = best_so_far()
    if os.path.exists(checkpoint_path):  # none when no epoch had a finite validation loss
        with warnings.catch_warnings():  # the checkpoint's optimizer may be an earlier phase's
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(checkpoint_path)
    return {"history": history, "unfrozen": unfrozen, "best_epoch": best["epoch"] if best else None,
            "train_seconds": train_seconds, "seconds_to_best": best["elapsed"] if best else None}
