"""Benchmark: the course's two experiments, done properly, on the shared flowers and cats vs dogs.

examples:
  python benchmarks/course.py > course.log 2>&1 &                 # everything (about 75 min on 2 cores)
  python benchmarks/course.py --datasets flowers --steps features curve
  python report.py                                                # then: RESULTS.md and its plots

Steps, per dataset, every run scored on the same test split and appended to
--out/results.jsonl (report.py reads it):
  features    embeddings of EfficientNet-Lite0, Lite1 and Lite2 at their own sizes, and
              flip-averaged ones (extract --tta flip) of Lite0 and Lite2; logistic
              regression on each, an SVM on Lite0 and flipped Lite2 (settings chosen on
              train by cross-validation; extraction counted in the seconds)
  curve       the learning curve of logistic regression on Lite0's embeddings: K training
              images per class (5, 10, 20, 50, 100, all), --seeds subsamples each
  small-cnn   the course's small CNN from scratch, trained until validation accuracy stops
              improving (--small-cnn-patience epochs without a better one; --small-cnn-monitor)
  frozen-in-graph, finetune
              the course's model: head on the frozen Lite0, then its last 40 layers at 1e-4
  recipe      whole-network fine-tuning of Lite0 with the modern recipe: warm-up then cosine
              decay, AdamW, label smoothing, RandAugment, flip test-time augmentation
  scratch     the whole Lite0 network from random weights (--scratch-epochs)
  few-shot    fine-tuning and the small CNN on K training images per class (--few-shot)
  ensemble    the runs above (all data) averaged, the members chosen on the validation split
A benchmark, not a test: both datasets take over two hours on 2 cores (--steps and
--datasets run parts); run it alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from features.cli.common import HelpFormatter

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"
STEPS = ("features", "curve", "small-cnn", "frozen-in-graph", "finetune", "recipe", "scratch", "few-shot",
         "ensemble")
# (backbone, test-time augmentation, heads) of the features step
FEATURES = (("efficientnet_lite0", "none", ("logreg", "svm")), ("efficientnet_lite0", "flip", ("logreg",)),
            ("efficientnet_lite1", "none", ("logreg",)), ("efficientnet_lite2", "none", ("logreg",)),
            ("efficientnet_lite2", "flip", ("logreg", "svm")))


def build_parser():
    p = argparse.ArgumentParser(prog="benchmarks/course.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="folder holding the image folders")
    p.add_argument("--datasets", nargs="+", default=["flowers", "cats_vs_dogs"])
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    p.add_argument("--seeds", type=int, default=5, help="subsamples per point of the learning curve")
    p.add_argument("--small-cnn-epochs", type=int, default=60, help="at most this many; early stopping ends it")
    p.add_argument("--small-cnn-patience", type=int, default=8)
    p.add_argument("--small-cnn-monitor", default="val_accuracy", choices=("val_loss", "val_accuracy"),
                   help="what the small CNN's early stopping and kept weights go by (with val_loss, on cats vs "
                        "dogs its validation loss swung while its accuracy had not yet left chance, and stopped it "
                        "at epoch 9)")
    p.add_argument("--scratch-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--recipe-epochs", type=int, default=10,
                   help="fine-tuning epochs after the head's 2 (on flowers, chosen on validation: 6 gave 0.9552, "
                        "10 gave 0.9616)")
    p.add_argument("--few-shot", type=int, nargs="+", default=[10, 50], help="training images per class")
    p.add_argument("--max-per-class", type=int, help="a seeded sample of each dataset (quick runs)")
    p.add_argument("--image-size", type=int, help="every network at this size (quick runs); default: their own")
    p.add_argument("--embeddings", default="embeddings", help="cache folder")
    p.add_argument("--out", default="runs", help="outputs folder (results.jsonl)")
    return p


def configs(args) -> dict:
    """The training runs of each step, as TrainConfig keyword arguments."""
    size = {"image_size": args.image_size} if args.image_size else {}
    lite0 = dict(backbone="efficientnet_lite0", **size)
    small = dict(backbone="small_cnn", weights="none", epochs=args.small_cnn_epochs,
                 patience=args.small_cnn_patience, monitor=args.small_cnn_monitor, **size)
    finetune = dict(lite0, unfreeze="40", head_epochs=3, epochs=args.finetune_epochs, lr=1e-4)
    return {
        "small-cnn": small,
        "frozen-in-graph": dict(lite0, unfreeze="0", epochs=5),
        "finetune": finetune,
        "recipe": dict(lite0, unfreeze="all", head_epochs=2, epochs=args.recipe_epochs, lr=1e-4,
                       schedule="cosine", warmup_epochs=1, weight_decay=0.05, label_smoothing=0.1,
                       augment="strong", tta="flip"),
        "scratch": dict(lite0, weights="none", epochs=args.scratch_epochs),
        "few-shot": [("finetune", finetune), ("small-cnn", small)],
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from features import cache as store
    from features.data import load_folder
    from features.extraction.run import extract
    from features.heads.classify import classify_cache
    from features.records import runs
    from features.reports import learning_curve
    from features.reports.ensemble import score_ensemble
    from features.train.config import TrainConfig
    from features.train.run import finetune

    plan = configs(args)
    start = time.perf_counter()
    print(f"course: {os.cpu_count()} cores, {platform.machine()}, GPU: {len(tf.config.list_physical_devices('GPU'))}, "
          f"TensorFlow {tf.__version__}; steps {' '.join(args.steps)}", flush=True)

    def say(name, what, row):
        extra = f", val {row['val_accuracy']:.4f}" if row.get("val_accuracy") is not None else ""
        print(f"[{(time.perf_counter() - start) / 60:5.1f} min] {name} {what}: test accuracy {row['accuracy']:.4f}"
              f"{extra}, {row.get('total_seconds') or row.get('train_seconds') or 0:.0f} s", flush=True)

    for name in args.datasets:
        source = load_folder(Path(args.root) / name, max_per_class=args.max_per_class)
        made = []  # this dataset's full-data run folders, for the ensemble
        if "features" in args.steps or "curve" in args.steps:
            for backbone, tta, heads in FEATURES:
                if "features" not in args.steps and (backbone, tta) != ("efficientnet_lite0", "none"):
                    continue
                ex = extract(source, backbone, image_size=args.image_size, out_dir=args.embeddings, tta=tta,
                             progress=False)
                cache = store.read_cache(ex.path)
                if "curve" in args.steps and (backbone, tta) == ("efficientnet_lite0", "none"):
                    for row in learning_curve.frozen_curve(cache, seeds=args.seeds):
                        runs.append_result(args.out, {
                            "dataset": name, "backbone": backbone, "image_size": int(cache.attrs["image_size"]),
                            "method": "learning-curve", "train_per_class": row.pop("per_class"), **row})
                    print(f"[{(time.perf_counter() - start) / 60:5.1f} min] {name} learning curve: done", flush=True)
                if "features" not in args.steps:
                    continue
                for head in heads:
                    r = classify_cache(cache, head, out_dir=args.out, features=[str(ex.path)])
                    made.append(r["run_dir"])
                    say(name, f"{backbone}{' flip' if tta == 'flip' else ''} + {head}", r)
        for step in ("small-cnn", "frozen-in-graph", "finetune", "recipe", "scratch"):
            if step in args.steps:
                r = finetune(source, TrainConfig(**plan[step]), out_dir=args.out, verbose=0)
                if step != "scratch":
                    made.append(r["run_dir"])
                say(name, f"{step} ({r['epochs_run']} epochs, best {r['best_epoch']})", r)
        if "few-shot" in args.steps:
            for k in args.few_shot:
                for step, config in plan["few-shot"]:
                    r = finetune(source, TrainConfig(**config, train_per_class=k), out_dir=args.out, verbose=0)
                    say(name, f"{step} on {k} per class ({r['n_train']} images)", r)
        if "ensemble" in args.steps and len(made) >= 2:
            r = score_ensemble(made, "val", out_dir=args.out)
            say(name, f"ensemble of {len(r['members'])} chosen on val ({r['head']})", r)
    print(f"course: done in {(time.perf_counter() - start) / 60:.1f} min; python report.py writes RESULTS.md",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
