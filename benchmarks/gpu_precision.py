"""Benchmark: mixed_float16 against float32 on a GPU, for extraction and fine-tuning.

examples:
  KERAS_BACKEND=jax python benchmarks/gpu_precision.py --data-dir ../shared/datasets/flowers
  python benchmarks/gpu_precision.py --data-dir DIR --images 600 --epochs 3

The models are the toolkit's own (features.models, features.train.model), run by Keras 3 on
whichever backend is installed: the GPU machine lent to this project has JAX and PyTorch
but no TensorFlow, so this script decodes with Pillow (bilinear resize of the whole image)
instead of the tf.data pipeline. It measures, on one seeded stratified split of the folder:
  extraction  images/s of the frozen backbone on batches already on the host, each policy;
              relative error and cosine of the mixed embeddings; logistic-regression test
              accuracy on each
  fine-tune   seconds per epoch (the first, compiling, epoch left out) and test accuracy of
              the course's model, last --unfreeze layers trained, each policy
A benchmark, not a test: compare figures from one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def build_parser():
    from features.cli.common import HelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/gpu_precision.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, help="image folder, one sub-folder per class")
    p.add_argument("--images", type=int, default=0, help="a seeded sample of about this many (0: all)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    p.add_argument("--unfreeze", default="20")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the images per extraction figure")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (head and unfrozen layers together)")
    p.add_argument("--policy", default="mixed_float16", help="the reduced-precision policy to compare")
    return p


def load(data_dir: str, n: int, size: int):
    from PIL import Image

    from features.data import load_folder

    source = load_folder(data_dir, max_per_class=max(1, n // 5) if n else None)
    images = np.empty((len(source), size, size, 3), np.float32)
    for i, path in enumerate(source.paths()):
        with Image.open(path) as im:
            images[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
    return source, images


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import keras
    from sklearn.linear_model import LogisticRegression

    from features.data import TEST
    from features.models import create_backbone, get_spec, resolve_image_size
    from features.train.config import TrainConfig
    from features.train.model import build_model, set_trainable

    spec = get_spec(args.backbone)
    size = resolve_image_size(spec, None)
    source, images = load(args.data_dir, args.images, size)
    train, test = source.splits != TEST, source.splits == TEST
    y = source.labels
    print(f"backend {keras.backend.backend()} {keras.__version__}; {len(source)} images "
          f"({train.sum()} train+val, {test.sum()} test); {spec.name} at {size} px", flush=True)
    try:
        import jax

        print("devices:", jax.devices(), flush=True)
    except ImportError:
        pass
    rows, emb = [], {}
    for policy in ("float32", args.policy):
        keras.mixed_precision.set_global_policy(policy)
        model = create_backbone(spec.name, image_size=size)
        for bs in args.batch_sizes:
            out = model.predict(images, batch_size=bs, verbose=0)  # compiles the full and the last batch
            start = time.perf_counter()
            for _ in range(args.repeats):
                out = model.predict(images, batch_size=bs, verbose=0)
            rate = args.repeats * len(images) / (time.perf_counter() - start)
            rows.append((policy, bs, rate))
            print(f"  extraction {policy:14s} batch {bs:4d}: {rate:8.1f} img/s", flush=True)
        emb[policy] = np.asarray(out, np.float32)
    ref, low = emb["float32"], emb[args.policy]
    rel = np.linalg.norm(low - ref) / np.linalg.norm(ref)
    cos = np.mean(np.sum(low * ref, 1) / (np.linalg.norm(low, axis=1) * np.linalg.norm(ref, axis=1)))
    accs = {}
    for policy, e in emb.items():
        clf = LogisticRegression(max_iter=3000, C=1.0).fit(e[train], y[train])
        accs[policy] = clf.score(e[test], y[test])
    print(f"  embeddings {args.policy} vs float32: relative error {rel:.5f}, mean cosine {cos:.6f}; "
          f"logreg test accuracy float32 {accs['float32']:.4f}, {args.policy} {accs[args.policy]:.4f}", flush=True)
    for bs in args.batch_sizes:
        fp = next(r for p, b, r in rows if p == "float32" and b == bs)
        mp = next(r for p, b, r in rows if p == args.policy and b == bs)
        print(f"  extraction speed-up at batch {bs}: {mp / fp:.2f}x", flush=True)

    ft = {}
    for policy in ("float32", args.policy):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        config = TrainConfig(backbone=spec.name, image_size=size, unfreeze=args.unfreeze, augment="none")
        model, network = build_model(config, spec, len(source.class_names))
        set_trainable(network, args.unfreeze)
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"])
        times = []

        class Timer(keras.callbacks.Callback):
            def __init__(self, seconds: list):
                super().__init__()
                self.seconds = seconds

            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self.t)

        model.fit(images[train], y[train], batch_size=32, epochs=args.epochs, verbose=0, callbacks=[Timer(times)],
                  shuffle=True)
        proba = model.predict(images[test], batch_size=64, verbose=0)
        acc = float((np.argmax(proba, 1) == y[test]).mean())
        steady = float(np.mean(times[1:])) if len(times) > 1 else times[0]
        ft[policy] = (steady, acc)
        print(f"  fine-tuning {policy:14s}: {steady:.2f} s/epoch after the first ({times[0]:.1f} s), "
              f"test accuracy {acc:.4f}", flush=True)
    keras.mixed_precision.set_global_policy("float32")
    print(f"  fine-tuning speed-up: {ft['float32'][0] / ft[args.policy][0]:.2f}x, accuracy change "
          f"{(ft[args.policy][1] - ft['float32'][1]) * 100:+.2f} points", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
