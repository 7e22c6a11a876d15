"""Benchmark: fine-tuning on cached augmented views (finetune.py --cache-frozen --views K) against K = 1 (the cache
without augmentation) and against augmentation on the fly without the cache, at the same unfrozen depth and epochs.

examples:
  python benchmarks/views.py --sizes                  # the bytes of one view of one photo, per backbone and cut
  python benchmarks/views.py --datasets flowers --backbones efficientnet_lite0 --views 1 4 8 --seeds 0
  python benchmarks/views.py                          # both datasets, Lite0 and Lite2, K 1 4 8 16, 3 seeds, on the fly

Every run trains the last --unfreeze layers and the head for --epochs epochs (Adam at --lr, label smoothing
--label-smoothing), the epoch chosen on validation, and is scored once on the shared folder's test split. Printed:
one line a run (seconds in all, the frozen prefix's pass included, and that pass alone; validation and test
accuracy), then the mean and standard deviation over the seeds of each setting. Runs are appended to
--out/results.jsonl. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from features.cli.common import HelpFormatter

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def build_parser():
    p = argparse.ArgumentParser(prog="benchmarks/views.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="folder holding the image folders")
    p.add_argument("--datasets", nargs="+", default=["flowers", "cats_vs_dogs"])
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2"])
    p.add_argument("--views", nargs="+", type=int, default=[1, 4, 8, 16], help="K of each cached run (1: no views)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--on-the-fly", action=argparse.BooleanOptionalAction, default=True,
                   help="also train with --augment standard on the fly, without the cache")
    p.add_argument("--unfreeze", default="40")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sizes", action="store_true", help="print the size of one view of one photo and stop")
    p.add_argument("--out", default="runs", help="outputs folder (results.jsonl)")
    return p


def sizes(backbones, cuts=("0", "20", "40")) -> None:
    """The frozen prefix's output for each backbone and cut: what one cached view of one photo holds."""
    import numpy as np

    from features.models.registry import resolve_backbone
    from features.train import model as training
    from features.train.config import TrainConfig

    for name in backbones:
        backbone = resolve_backbone(name, None, "none")
        config = TrainConfig(backbone=name, image_size=backbone.image_size, weights="none", augment="none")
        model, network = training.build_model(config, name, 5)
        for cut in cuts:
            prefix, _, _ = training.frozen_prefix_models(model, network, training.unfrozen_count(network, cut))
            shape = tuple(int(d) for d in prefix.output.shape[1:])
            print(f"{name} at {backbone.image_size} px, unfreeze {cut}: the prefix gives {shape}, "
                  f"{int(np.prod(shape)) * 4 / 1024:.0f} KiB a view of a photo (float32)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.sizes:
        sizes(args.backbones)
        return 0
    from features.data import load_folder
    from features.train.config import TrainConfig
    from features.train.run import finetune

    settings = [("cached, K=1", dict(cache_frozen=True, augment="none"))] if 1 in args.views else []
    settings += [(f"cached views, K={k}", dict(cache_frozen=True, augment="standard", views=k))
                 for k in args.views if k > 1]
    if args.on_the_fly:
        settings.append(("on the fly", dict(augment="standard")))
    found = {}
    for name in args.datasets:
        source = load_folder(Path(args.root) / name)
        for backbone in args.backbones:
            for label, setting in settings:
                for seed in args.seeds:
                    config = TrainConfig(backbone=backbone, unfreeze=args.unfreeze, head_epochs=0, epochs=args.epochs,
                                         lr=args.lr, label_smoothing=args.label_smoothing, batch_size=args.batch_size,
                                         seed=seed, **setting)
                    r = finetune(source, config, out_dir=args.out, verbose=0)
                    found.setdefault((name, backbone, label), []).append(r)
                    print(f"{name} {backbone} {label} seed {seed}: {r['train_seconds']:.0f} s in all (prefix pass "
                          f"{r['cache_seconds']:.0f} s), best epoch {r['best_epoch']}, val {r['val_accuracy']:.4f}, "
                          f"test {r['accuracy']:.4f}", flush=True)
    print("\nmean (sd) over the seeds:")
    for (name, backbone, label), rows in found.items():
        tests, seconds = [r["accuracy"] for r in rows], [r["train_seconds"] for r in rows]
        sd = f" (sd {statistics.stdev(tests):.4f})" if len(tests) > 1 else ""
        print(f"  {name} {backbone} {label}: test {statistics.mean(tests):.4f}{sd}, {statistics.mean(seconds):.0f} s "
              f"({len(rows)} seed(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
