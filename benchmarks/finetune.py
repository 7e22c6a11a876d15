"""Benchmark: what transfer learning buys, on the shared flowers and cats vs dogs photos.

examples:
  python benchmarks/finetune.py                      # both datasets, every method (about 40 min on 2 cores)
  python benchmarks/finetune.py --datasets flowers --methods frozen-features finetune

Methods, all scored on the same test split:
  frozen-features   extract embeddings once, then logistic regression (extraction counted)
  frozen-in-graph   the course's first step: head trained on the frozen base, in Keras
  finetune          head first, then the last --unfreeze layers at --lr
  scratch           the same network from random weights
Prints one table (training seconds, seconds per epoch, test accuracy, macro F1) and
appends every run to --out/results.jsonl. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from features.cli.common import HelpFormatter

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"
METHODS = ("frozen-features", "frozen-in-graph", "finetune", "scratch")


def build_parser():
    p = argparse.ArgumentParser(prog="benchmarks/finetune.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="folder holding the image folders")
    p.add_argument("--datasets", nargs="+", default=["flowers", "cats_vs_dogs"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=None, help="default: the backbone's own")
    p.add_argument("--frozen-epochs", type=int, default=5, help="epochs of frozen-in-graph")
    p.add_argument("--head-epochs", type=int, default=3, help="head epochs before fine-tuning")
    p.add_argument("--finetune-epochs", type=int, default=6, help="fine-tuning epochs after the head")
    p.add_argument("--scratch-epochs", type=int, default=6)
    p.add_argument("--unfreeze", default="40")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--embeddings", default="embeddings", help="cache folder")
    p.add_argument("--out", default="runs", help="outputs folder (results.jsonl)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from features import cache as store
    from features.data import load_folder
    from features.extraction.run import extract
    from features.heads.classify import classify_cache
    from features.train.config import TrainConfig
    from features.train.run import finetune

    table = []
    for name in args.datasets:
        source = load_folder(Path(args.root) / name)
        base = dict(backbone=args.backbone, image_size=args.image_size, batch_size=args.batch_size)
        for method in args.methods:
            if method == "frozen-features":
                ex = extract(source, args.backbone, image_size=args.image_size, out_dir=args.embeddings,
                             batch_size=args.batch_size, progress=False)
                r = classify_cache(store.read_cache(ex.path), "logreg", out_dir=args.out, features=[str(ex.path)])
                table.append((name, method, r["image_size"], "-", r["total_seconds"], None,
                              r["accuracy"], r["f1_macro"], f"extract {ex.seconds:.0f} s + logreg"))
            else:
                config = TrainConfig(**base, **{
                    "frozen-in-graph": dict(unfreeze="0", epochs=args.frozen_epochs),
                    "finetune": dict(unfreeze=args.unfreeze, head_epochs=args.head_epochs,
                                     epochs=args.finetune_epochs, lr=args.lr),
                    "scratch": dict(weights="none", epochs=args.scratch_epochs),
                }[method])
                r = finetune(source, config, out_dir=args.out, verbose=0)
                table.append((name, method, r["image_size"], r["epochs_run"], r["train_seconds"],
                              r["seconds_per_epoch"], r["accuracy"], r["f1_macro"],
                              f"unfrozen {r['unfrozen_layers']}, best epoch {r['best_epoch']}"))
            print(f"{name} {method}: done, test accuracy {table[-1][6]:.4f}", flush=True)
    print(f"\nmachine: {os.cpu_count()} cores, {platform.machine()}, GPU: "
          f"{len(tf.config.list_physical_devices('GPU'))}, TensorFlow {tf.__version__}; backbone {args.backbone}; "
          f"finetune lr {args.lr}, unfreeze {args.unfreeze}")
    print(f"{'dataset':13s} {'method':16s} {'px':>4s} {'epochs':>6s} {'train s':>8s} {'s/epoch':>8s} "
          f"{'test acc':>8s} {'macro F1':>8s}  notes")
    for name, method, size, epochs, seconds, per_epoch, acc, f1, notes in table:
        per = f"{per_epoch:8.1f}" if per_epoch else f"{'-':>8s}"
        print(f"{name:13s} {method:16s} {size:4d} {epochs!s:>6s} {seconds:8.1f} {per} {acc:8.4f} {f1:8.4f}  {notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
