"""The settings of a training run, and the one place they are checked.

:class:`TrainConfig` is the one description of a run's settings: each field carries its
default and its help text, and ``finetune.py`` builds its flags from the fields
(:func:`features.cli.add_config_flags`), so neither is restated. :func:`resolve_config`
is called once, at the top of :func:`features.train.run.finetune`, before any model is
built or image decoded; every step after it trusts the result. Messages name the
parameters (``{lr}``); the command line renders them as flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .. import validate
from ..errors import UsageError

HEAD_UNITS = 128
HEAD_DROPOUT = 0.1
DISTRIBUTE = ("none", "mirrored")
SCHEDULES = ("constant", "cosine")
MONITORS = ("val_loss", "val_accuracy")
AUGMENTATIONS = ("none", "standard", "strong")
# What the network computes in, named as extract.py names it; mixed: each device's fast 16-bit type.
PRECISIONS = ("fp32", "bf16", "fp16", "mixed")
FORMER_PRECISIONS = {"float32": "fp32"}  # the names taken before the vocabulary was shared: still taken
BINARY_OUTPUTS = ("sigmoid", "softmax")
MAX_VIEWS = 32  # cached augmented views of each training image (16 is the most measured)
UNFREEZE_LAYERS = "20"  # the default --unfreeze: the last 20 layers of a Keras network ...
UNFREEZE_BLOCKS = "2"  # ... and the last 2 transformer blocks of a hub encoder


def _setting(default, help: str, group: str = "training", **flag):
    """A field with its help text (``{param}`` placeholders are rendered as flags) and argparse extras
    (``choices``, ``metavar``; ``flag=False``: the script sets it from another flag)."""
    return field(default=default, metadata={"help": help, "group": group, **flag})


@dataclass(kw_only=True)
class TrainConfig:
    """Everything that shapes a training run; saved beside its results."""

    backbone: str = _setting("efficientnet_lite0", "registry name; see extract.py's list of backbones", "model")
    weights: str = _setting("imagenet", "'imagenet', 'none' (from scratch) or PATH of a weights file", "model")
    image_size: int | None = _setting(None, "input size (default: the backbone's own)", "model", metavar="PX")
    unfreeze: str | None = _setting(
        None, f"train the last N layers of the base (default {UNFREEZE_LAYERS}; of a hub encoder, its last N "
        f"transformer blocks, default {UNFREEZE_BLOCKS}; 0: head only on a frozen base; 'all')", "model", metavar="N")
    binary_output: str | None = _setting(
        None, "two classes only: one sigmoid neuron (default) or two softmax neurons", "model",
        choices=BINARY_OUTPUTS)
    epochs: int = _setting(10, "epochs of the main phase (early stopping may end it)")
    head_epochs: int = _setting(3, "epochs of the head alone before unfreezing")
    lr: float = _setting(1e-5, "Adam learning rate while fine-tuning")
    head_lr: float = _setting(1e-3, "Adam learning rate of the head phase")
    scratch_lr: float = _setting(1e-3, "Adam learning rate from scratch")
    batch_size: int = _setting(32, "images per step (on each replica, with {distribute=mirrored})")
    patience: int = _setting(3, "epochs without a better {monitor} figure before stopping")
    monitor: str = _setting(
        "val_loss", "what early stopping and the kept weights go by: the validation loss, or the validation "
        "accuracy (ties to the lower loss; for networks from scratch, whose loss swings early)", choices=MONITORS)
    augment: str = _setting(
        "standard", "random changes of the training images: none; standard (flip, rotation and zoom); strong "
        "(flip and Keras' RandAugment, two random operations of strength 0.3 per image)", choices=AUGMENTATIONS)
    cache_frozen: bool = _setting(
        False, "run the frozen layers once and train the rest on their cached activations (in memory, or on "
               "disk under the run folder when they do not fit): same result, several times faster per epoch. "
               "Applies to a pretrained base with {unfreeze} below 'all', and {augment=none} unless {views} is 2 "
               "or more")
    views: int = _setting(
        1, "with {cache_frozen}: the frozen layers map K randomly changed versions of every training image (the "
           "changes {augment} names, drawn with the run's seed) once, and each epoch trains on one of them an "
           "image, a different one each epoch; validation and test images go through unchanged. 1: the images "
           f"as they are (then {{augment=none}}); at most {MAX_VIEWS}", metavar="K")
    label_smoothing: float = _setting(
        0.0, "train towards 1 - S on the true class and S spread over all classes (e.g. 0.1)", metavar="S")
    train_per_class: int | None = _setting(
        None, "train on a seeded sample of at most K training images per class; validation and test images "
              "stay the same (learning curves)", metavar="K")
    precision: str = _setting("fp32", "what the network computes in, as extract.py names it: fp32; bf16 or fp16 "
                                      "(mixed precision: the weights and outputs stay float32); mixed: fp16 on a "
                                      "GPU, bf16 on a CPU. float32, the former name of fp32, is still taken",
                              choices=(*PRECISIONS, *FORMER_PRECISIONS), metavar="{" + ",".join(PRECISIONS) + "}")
    schedule: str = _setting("constant", "learning rate over the main phase (fine-tuning; from scratch, the "
                                         "only phase; with {unfreeze=0}, the head's): constant, or a cosine "
                                         "decay towards 0", choices=SCHEDULES)
    warmup_epochs: int = _setting(0, "the main phase's learning rate rises linearly over its first N epochs",
                                  metavar="N")
    weight_decay: float = _setting(
        0.0, "above 0: AdamW with this decoupled weight decay (e.g. 0.0001) instead of Adam", metavar="W")
    distribute: str = _setting(
        "none", "mirrored: one replica per GPU of this machine (tf.distribute.MirroredStrategy), each taking "
                "{batch_size} images a step", choices=DISTRIBUTE)
    tta: str = _setting("none", "flip: score each validation and test image on the mean of its and its mirror's "
                                "probabilities", "scoring", choices=("none", "flip"))
    time_limit: float | None = _setting(
        None, "stop training after S seconds counted from the run's start (the frozen prefix's pass included): "
              "an epoch that would end past them is not begun, one that runs past them stops at its next batch; "
              "the best epoch on validation so far is kept, then the run is scored as usual", metavar="S")
    seed: int = _setting(0, "seed of the split, the weights' initialisation and the shuffling", flag=False)

    @property
    def scratch(self) -> bool:
        return self.weights == "none"

    @property
    def method(self) -> str:
        if self.scratch:
            return "scratch"
        return "frozen-in-graph" if self.unfreeze == "0" else "finetune"


def parse_unfreeze(text) -> str:
    """``unfreeze``: a non-negative count of layers or "all"."""
    if str(text) == "all":
        return "all"
    try:
        n = int(str(text))
    except ValueError:
        n = -1
    if n < 0 or isinstance(text, bool):
        raise UsageError(f"{{unfreeze}} {text}: give a number of layers (0 or more) or 'all'")
    return str(n)


def check_settings(config: TrainConfig) -> TrainConfig:
    """Check the settings that need no dataset; return them with ``unfreeze`` normalised.

    Raises:
        UsageError: a setting out of range, or two that cannot go together.
    """
    from ..models.registry import check_tta

    validate.batch_size(config.batch_size)
    validate.seed(config.seed)
    validate.whole(config.epochs, "epochs", low=1)
    validate.whole(config.head_epochs, "head_epochs", low=0)
    validate.whole(config.patience, "patience", low=1)
    for name in ("lr", "head_lr", "scratch_lr"):
        validate.positive(getattr(config, name), name)
    precision = FORMER_PRECISIONS.get(config.precision, config.precision) if isinstance(config.precision, str) \
        else config.precision
    validate.choice(precision, "precision", PRECISIONS)
    validate.choice(config.schedule, "schedule", SCHEDULES)
    validate.whole(config.warmup_epochs, "warmup_epochs", low=0, high=config.epochs - 1,
                   high_text=f"{{epochs}} - 1 ({config.epochs - 1})")
    validate.fraction(config.weight_decay, "weight_decay")
    validate.fraction(config.label_smoothing, "label_smoothing", ", e.g. 0.1")
    validate.choice(config.monitor, "monitor", MONITORS)
    validate.choice(config.augment, "augment", AUGMENTATIONS)
    check_tta(config.tta)
    validate.optional_whole(config.train_per_class, "train_per_class", low=1)
    validate.choice(config.distribute, "distribute", DISTRIBUTE)
    if config.binary_output is not None:
        validate.choice(config.binary_output, "binary_output", BINARY_OUTPUTS)
    unfreeze = None if config.unfreeze is None else parse_unfreeze(config.unfreeze)
    if not isinstance(config.cache_frozen, bool):
        raise UsageError(f"{{cache_frozen}} {config.cache_frozen}: give True or False")
    if config.cache_frozen and config.scratch:
        raise UsageError("{cache_frozen=True} applies to a pretrained base; from scratch every layer trains")
    validate.whole(config.views, "views", low=1, high=MAX_VIEWS, what=" of views")
    if config.views > 1 and not config.cache_frozen:
        raise UsageError(f"{{views}} {config.views}: views are cached activations; give {{cache_frozen=True}} too "
                         "(without it, every epoch sees newly changed images)")
    if config.views > 1 and config.augment == "none":
        raise UsageError(f"{{views}} {config.views}: views are randomly changed versions of each image; give "
                         "{augment} standard or strong")
    if config.cache_frozen and config.augment != "none" and config.views == 1:
        raise UsageError("{cache_frozen=True} needs {augment=none}, or {views} 2 or more: augmented images change "
                         "every epoch, so the frozen layers' output of one image cannot be computed once (K "
                         "changed versions of it can)")
    if config.cache_frozen and unfreeze == "all":
        raise UsageError("{cache_frozen=True} with {unfreeze=all}: no layer is frozen, so nothing can be cached")
    if config.time_limit is not None:
        validate.positive(config.time_limit, "time_limit")
    return dataclasses.replace(config, unfreeze=unfreeze, precision=precision)


def resolve_config(config: TrainConfig, source):
    """Check the settings against the dataset before any work; settle the backbone and defaults.

    Args:
        source: the :class:`~features.data.DataSource` to train on.

    Returns:
        (config, backbone): the config with its defaults filled in (image size, binary
        output, ``unfreeze``), and the resolved :class:`~features.models.registry.Backbone`.

    Raises:
        UsageError: a setting that cannot apply (see the messages).
    """
    from ..models.registry import resolve_backbone

    config = check_settings(config)
    backbone = resolve_backbone(config.backbone, config.image_size, config.weights)
    n_classes = len(source.class_names)
    if n_classes < 2:
        raise UsageError(f"{source.name} has one class; a classifier needs at least two")
    if config.binary_output is not None and n_classes != 2:
        raise UsageError(f"{{binary_output}} {config.binary_output} applies to two classes; "
                         f"{source.name} has {n_classes}")
    for split, count in source.split_counts().items():
        if count == 0:
            raise UsageError(f"{source.name} has no {split} images with this {{split}}; give every split a share")
    unfreeze = config.unfreeze or (UNFREEZE_BLOCKS if backbone.spec.preset else UNFREEZE_LAYERS)
    config = dataclasses.replace(config, backbone=backbone.name, image_size=backbone.image_size,
                                 binary_output=config.binary_output or "sigmoid", unfreeze=unfreeze)
    return config, backbone
