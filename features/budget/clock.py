"""The time budget: a duration read, the clock that keeps it, and what each step is estimated to cost.

Estimates come from rates measured on this machine: a backbone's images per second from one batch
through it (:func:`network_rate`), a head's seconds per training row from the first head fitted. They
decide what is tried; the clock decides what is cut (fine-tuning stops at its deadline).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from ..errors import UsageError

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)")

# An epoch on cached activations of the last layers, against one pass of the whole network over the same
# images (benchmarks/views.py, flowers, efficientnet_lite0 with its last 40 layers trained: 11 s an epoch
# of 2,654 images after a 25 s pass over 3,122, and 14 s after a 277 s pass over eight views of each).
EPOCH_SHARE = 0.5
# The whole network trained on decoded, augmented images, against one inference pass over them
# (BENCHMARKS.md: 151 s an epoch of the recipe against 33.83 s an epoch of the frozen base on the fly).
TRAIN_SHARE = 4.5


def parse_duration(text, param: str = "time_limit") -> float:
    """Seconds from ``900``, ``900s``, ``15m``, ``1.5h`` or ``1h30m``.

    Raises:
        UsageError: anything else, or no time at all.
    """
    value = str(text).strip().lower()
    parts = list(_PART.finditer(value))
    if not parts or "".join(m.group(0) for m in parts).replace(" ", "") != value.replace(" ", "") \
            or (len(parts) > 1 and not all(m.group(2) for m in parts)):
        raise UsageError(f"{{{param}}} {text}: give seconds (900) or a duration with s, m or h (15m, 1.5h, 1h30m)")
    seconds = sum(float(m.group(1)) * _UNITS[m.group(2)] for m in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"{{{param}}} {text}: give a time above zero")
    return seconds


def say_seconds(seconds: float) -> str:
    """``95.3`` -> ``"95 s"``; ``754`` -> ``"12 min 34 s"``."""
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


@dataclass(kw_only=True)
class Clock:
    """The budget: ``limit`` seconds from ``start`` (a ``time.monotonic()`` moment, default now)."""

    limit: float
    start: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.start + self.limit

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline - time.monotonic()


def network_rate(backbone, *, batch: int = 32) -> float:
    """Images a second through ``backbone`` (a resolved :class:`~features.models.registry.Backbone`) on this
    machine: a batch of ``batch`` random images at its size, the fastest of three timings after two untimed ones
    (the first call builds the graph, the next still warms up). Its own weights do not change the time, so it is
    built without them."""
    import numpy as np

    from ..models import create_backbone

    network = create_backbone(backbone.name, weights="none", image_size=backbone.image_size)
    x = np.random.default_rng(0).uniform(0, 255, (batch, backbone.image_size, backbone.image_size, 3))
    x = x.astype("float32")
    for _ in range(2):
        network.predict(x, verbose=0)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        network.predict(x, verbose=0)
        timings.append(time.perf_counter() - start)
    return batch / max(min(timings), 1e-6)
