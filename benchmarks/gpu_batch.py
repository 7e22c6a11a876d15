"""Benchmark: extraction images/s against the batch size, on whatever device Keras runs on.

examples:
  KERAS_BACKEND=jax python benchmarks/gpu_batch.py                  # the lent GPU (JAX, no TensorFlow)
  python benchmarks/gpu_batch.py --batch-sizes 16 32 64 --images 512

What extract.py's default batch size on a GPU rests on. The toolkit's own backbone
(features.models, random weights: the speed does not depend on them) runs over
synthetic images already on the host, so no dataset or weights file is needed; the image
count is a multiple of every batch size, so no short last batch is timed. One untimed pass
compiles, then --repeats timed passes give each figure, batch sizes interleaved by round.
A benchmark, not a test: compare figures from one run on one machine.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np


def build_parser():
    from features.cli.common import HelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/gpu_batch.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--images", type=int, default=4096, help="rounded up to a multiple of every batch size")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per figure and round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    p.add_argument("--policies", nargs="+", default=["float32", "mixed_float16"])
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import keras

    from features.models import create_backbone, get_spec, resolve_image_size

    spec = get_spec(args.backbone)
    size = resolve_image_size(spec, None)
    step = math.lcm(*args.batch_sizes)
    n = -(-args.images // step) * step
    images = np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    devices = ""
    try:
        import jax

        devices = f"; devices {jax.devices()}"
    except ImportError:
        pass
    print(f"backend {keras.backend.backend()} {keras.__version__}; {n} synthetic images; {spec.name} at {size} px"
          f"{devices}", flush=True)
    for policy in args.policies:
        keras.mixed_precision.set_global_policy(policy)
        model = create_backbone(spec.name, weights="none", image_size=size)
        rates = {bs: [] for bs in args.batch_sizes}
        for bs in args.batch_sizes:
            model.predict(images[:bs * 2], batch_size=bs, verbose=0)  # compiles this batch shape
        for _ in range(args.rounds):
            for bs in args.batch_sizes:
                start = time.perf_counter()
                for _ in range(args.repeats):
                    model.predict(images, batch_size=bs, verbose=0)
                rates[bs].append(args.repeats * n / (time.perf_counter() - start))
        best = max(args.batch_sizes, key=lambda b: np.median(rates[b]))
        for bs in args.batch_sizes:
            median = float(np.median(rates[bs]))
            print(f"  {policy:14s} batch {bs:4d}: {median:9.1f} img/s (rounds: "
                  f"{', '.join(f'{r:.0f}' for r in rates[bs])}){'  <- fastest' if bs == best else ''}", flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
