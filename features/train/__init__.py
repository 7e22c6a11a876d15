"""Training end to end in Keras: fine-tuning with the last N layers unfrozen, and from scratch.

* :mod:`.config`: :class:`TrainConfig`, every setting with its help, checked in one place.
* :mod:`.model`: the course's model on a registry backbone, what of it trains, the losses.
* :mod:`.loop`: the phases of a run, each epoch timed, the best weights kept.
* :mod:`.run`: :func:`~features.train.run.finetune`, one run step by step into a run folder.

Only :mod:`.config` is imported here: the rest imports Keras.
"""

from .config import TrainConfig, check_settings, resolve_config

__all__ = ["TrainConfig", "check_settings", "resolve_config"]
