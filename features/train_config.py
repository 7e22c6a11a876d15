"""The settings of a training run, and the one place they are checked.

:func:`resolve_config` is called once, at the top of :func:`features.finetuning.finetune`,
before any model is built or image decoded; every step after it trusts the result.
Messages name the parameters (``{lr}``); the command line renders them as flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import UsageError

HEAD_UNITS = 128
DISTRIBUTE = ("none", "mirrored")
SCHEDULES = ("constant", "cosine")
MONITORS = ("val_loss", "val_accuracy")
AUGMENTATIONS = ("standard", "strong")
HEAD_DROPOUT = 0.1


@dataclass
class TrainConfig:
    """Everything that shapes a training run; saved beside its results."""

    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    image_size: int | None = None
    unfreeze: str = "20"  # a count of layers, or "all"
    binary_output: str | None = None  # None: sigmoid for two classes; set only by the user
    epochs: int = 10
    head_epochs: int = 3
    lr: float = 1e-5
    head_lr: float = 1e-3
    scratch_lr: float = 1e-3
    batch_size: int = 32
    patience: int = 3
    monitor: str = "val_loss"  # what early stopping and the kept weights go by: or "val_accuracy"
    augment: bool = True
    augmentation: str = "standard"  # "strong": flip and RandAugment (with augment True)
    label_smoothing: float = 0.0  # the targets: 1 - s on the true class, s spread over all classes
    tta: str = "none"  # "flip": scored on the mean of the image's and its mirror's probabilities
    train_per_class: int | None = None  # a seeded sample of at most K training images per class
    cache_frozen: bool = False  # run the frozen prefix once and train the rest on its activations
    precision: str = "float32"
    distribute: str = "none"  # "mirrored": tf.distribute.MirroredStrategy over this machine's GPUs
    schedule: str = "constant"  # "cosine": the main phase's rate decays to 0 along a cosine
    warmup_epochs: int = 0  # the main phase's rate rises linearly over its first epochs
    weight_decay: float = 0.0  # above 0: AdamW with this decoupled weight decay
    seed: int = 0

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
    if n < 0:
        raise UsageError(f"{{unfreeze}} {text}: give a number of layers (0 or more) or 'all'")
    return str(n)


def check_settings(config: TrainConfig) -> TrainConfig:
    """Check the settings that need no dataset; return them with ``unfreeze`` normalised.

    Raises:
        UsageError: a setting out of range, or two that cannot go together.
    """
    from .backbones import check_batch_size
    from .data.splits import check_seed

    check_batch_size(config.batch_size)
    check_seed(config.seed)
    for name, low in (("epochs", 1), ("head_epochs", 0), ("patience", 1)):
        value = getattr(config, name)
        if not isinstance(value, int) or value < low:
            raise UsageError(f"{{{name}}} {value}: must be a whole number, at least {low}")
    for name in ("lr", "head_lr", "scratch_lr"):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise UsageError(f"{{{name}}} {value}: must be a finite number above zero")
    if config.precision not in ("float32", "mixed"):
        raise UsageError(f"{{precision}} {config.precision}: choose float32 or mixed")
    if config.schedule not in SCHEDULES:
        raise UsageError(f"{{schedule}} {config.schedule}: choose {' or '.join(SCHEDULES)}")
    if isinstance(config.warmup_epochs, bool) or not isinstance(config.warmup_epochs, int) or \
            not 0 <= config.warmup_epochs < config.epochs:
        raise UsageError(f"{{warmup_epochs}} {config.warmup_epochs}: give a whole number from 0 to {{epochs}} - 1 "
                         f"({config.epochs - 1})")
    decay = config.weight_decay
    if not (isinstance(decay, (int, float)) and not isinstance(decay, bool) and math.isfinite(decay)
            and 0 <= decay < 1):
        raise UsageError(f"{{weight_decay}} {decay}: give a number from 0 (none) to below 1")
    smoothing = config.label_smoothing
    if not (isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool) and math.isfinite(smoothing)
            and 0 <= smoothing < 1):
        raise UsageError(f"{{label_smoothing}} {smoothing}: give a number from 0 (none) to below 1, e.g. 0.1")
    if config.monitor not in MONITORS:
        raise UsageError(f"{{monitor}} {config.monitor}: choose {' or '.join(MONITORS)}")
    if config.augmentation not in AUGMENTATIONS:
        raise UsageError(f"{{augmentation}} {config.augmentation}: choose {' or '.join(AUGMENTATIONS)}")
    from .backbones import check_tta

    check_tta(config.tta)
    per_class = config.train_per_class
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise UsageError(f"{{train_per_class}} {per_class}: must be a whole number, at least 1")
    if config.distribute not in DISTRIBUTE:
        raise UsageError(f"{{distribute}} {config.distribute}: choose {' or '.join(DISTRIBUTE)}")
    if config.binary_output not in (None, "sigmoid", "softmax"):
        raise UsageError(f"{{binary_output}} {config.binary_output}: choose sigmoid or softmax")
    unfreeze = parse_unfreeze(config.unfreeze)
    if config.cache_frozen and config.scratch:
        raise UsageError("{cache_frozen=True} applies to a pretrained base; from scratch every layer trains")
    if config.cache_frozen and config.augment:
        raise UsageError("{cache_frozen=True} needs {augment=False}: augmented images change every epoch, "
                         "so the frozen layers' output cannot be computed once")
    if config.cache_frozen and unfreeze == "all":
        raise UsageError("{cache_frozen=True} with {unfreeze=all}: no layer is frozen, so nothing can be cached")
    return dataclasses.replace(config, unfreeze=unfreeze)


def resolve_config(config: TrainConfig, source):
    """Check the settings against the dataset before any work; settle the backbone and defaults.

    Args:
        source: the :class:`~features.data.DataSource` to train on.

    Returns:
        (config, backbone): the config with its defaults filled in (image size, binary
        output, ``unfreeze``), and the resolved :class:`~features.backbones.Backbone`.

    Raises:
        UsageError: a setting that cannot apply (see the messages).
    """
    from .backbones import resolve_backbone

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
    config = dataclasses.replace(config, backbone=backbone.name, image_size=backbone.image_size,
                                 binary_output=config.binary_output or "sigmoid")
    return config, backbone
