"""Backbones: the registry, how each is built, and the networks the toolkit defines itself.

* :mod:`.registry`: one :class:`BackboneSpec` per backbone (its factory and facts), and
  :func:`resolve_backbone`, which settles one for a run.
* :mod:`.build`: :func:`create_backbone` (input scaling inside, pooling, flip averaging) and
  :func:`embedding_function`, the frozen graph extraction runs.
* :mod:`.lite`: EfficientNet-Lite in Keras and its weight mapping; :mod:`.torchfile`, the
  torch-free restricted reader of its PyTorch state dicts; :mod:`.small_cnn`.
* :mod:`.hub`: KerasHub encoders (``hub:PRESET``): the preset's folder checked, each family's embedding,
  its blocks; :mod:`.hub_config`, its config bounded before anything is built.
* :mod:`.runtime`: which runtime and precision run the extraction network; :mod:`.onnx`, the network
  converted and proved for ONNX Runtime; :mod:`.openvino`, the same network compiled by OpenVINO.

Nothing here imports TensorFlow until a network is built.
"""

from .build import create_backbone, create_embedder, embedding_function, preprocess_layer
from .registry import (
                       DEFAULT_BATCH_SIZE,
                       REGISTRY,
                       TTA,
                       Backbone,
                       BackboneSpec,
                       check_pooling,
                       check_tta,
                       default_batch_size,
                       describe,
                       get_spec,
                       resolve_backbone,
                       resolve_image_size,
)

__all__ = [
    "create_backbone", "create_embedder", "embedding_function", "preprocess_layer", "DEFAULT_BATCH_SIZE",
    "REGISTRY", "TTA", "Backbone", "BackboneSpec", "check_pooling", "check_tta", "default_batch_size", "describe",
    "get_spec", "resolve_backbone", "resolve_image_size",
]
