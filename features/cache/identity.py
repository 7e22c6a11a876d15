"""A cache's identity, in one place: what it is made of (the attributes a cache hit compares) and the file
name made from them.

An extraction describes its cache as a :class:`CacheIdentity`; :meth:`CacheIdentity.key` is what the
cache's attributes must match to be a hit, :meth:`CacheIdentity.path` where it lives. The name holds only
what differs from the defaults, so the usual cache's name is short.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.splits import DEFAULT_SPLIT


@dataclass(frozen=True, kw_only=True)
class CacheIdentity:
    """What a cache is of.

    Attributes:
        dataset: the dataset's name (the cache's folder).
        fingerprint: the source listing's fingerprint (its files, sizes and times, or the TFDS version).
        source: where the photos are (a folder or ``tfds:<name>``).
        backbone: the backbone's name as the user gave it; ``slug`` is how it is spelt in a file name.
        weights: ``imagenet``, ``none`` or the weights file; ``weights_sha256`` the file's checksum.
        image_size: the side of the square the photos are resized to.
        pooling, tta: as ``extract.py`` takes them.
        seed, split, max_per_class: the split's seed and fractions, and the per-class cap of the listing.
        shard: (i, k), worker i of k.
        resize_method: how photos are decoded and resized (:data:`features.data.RESIZE_METHOD`).
        precision: what the network ran at, resolved (``fp32`` or ``bf16``).
    """

    dataset: str
    fingerprint: str
    source: str
    backbone: str
    slug: str
    weights: str
    weights_sha256: str | None = None
    image_size: int
    pooling: str = "avg"
    tta: str = "none"
    seed: int = 0
    split: tuple = DEFAULT_SPLIT
    max_per_class: int | None = None
    shard: tuple[int, int] = (0, 1)
    resize_method: str
    precision: str = "fp32"

    def key(self) -> dict:
        """The attributes a cache must hold to be a hit."""
        i, k = self.shard
        key = {"fingerprint": self.fingerprint, "source": self.source, "backbone": self.backbone,
               "weights": self.weights, "weights_sha256": self.weights_sha256, "image_size": self.image_size,
               "pooling": self.pooling, "seed": self.seed, "split": list(self.split), "shard": f"{i}/{k}",
               "resize_method": self.resize_method}
        if self.tta != "none":  # caches made before the option have no such attribute
            key["tta"] = self.tta
        if self.precision != "fp32":  # fp32 on any runtime is the same cache (within 1e-4); bf16's are not
            key["precision"] = self.precision
        return key

    def path(self, out_dir) -> Path:
        """Where the cache lives under ``out_dir`` (a shard file for one worker of several); defaults leave the
        name short: ``<dataset>/<slug>-<size>[-<pooling>][-tta<tta>][-<precision>][-random|-w<sha8>]
        [-seed<S>][-split<a-b-c>][-max<K>per-class][.shard<i>of<k>].h5``."""
        name = f"{self.slug}-{self.image_size}"
        if self.pooling != "avg":
            name += f"-{self.pooling}"
        if self.tta != "none":
            name += f"-tta{self.tta}"
        if self.precision != "fp32":
            name += f"-{self.precision}"
        if self.weights == "none":
            name += "-random"
        elif self.weights != "imagenet":
            name += f"-w{(self.weights_sha256 or 'file')[:8]}"
        if self.seed != 0:
            name += f"-seed{self.seed}"
        if not np.allclose(self.split, DEFAULT_SPLIT):
            name += "-split" + "-".join(f"{round(f * 100):d}" for f in self.split)
        if self.max_per_class:
            name += f"-max{self.max_per_class}per-class"
        i, k = self.shard
        if k > 1:
            name += f".shard{i}of{k}"
        return Path(out_dir) / self.dataset / f"{name}.h5"
