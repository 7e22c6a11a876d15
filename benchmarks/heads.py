"""Benchmark: every head on EfficientNet-Lite0 caches of the shared flowers and cats vs dogs.

examples:
  python benchmarks/heads.py                       # ../shared/datasets, all heads
  python benchmarks/heads.py --heads logreg svm --datasets flowers

Extracts the caches first where they are missing (a cache hit otherwise), then fits each
head with its cross-validated search and prints one table: head, test accuracy, macro F1,
and fit seconds (search included). Each run also lands in --out/results.jsonl.
A benchmark, not a test: compare figures from one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from features.cli.common import HelpFormatter
from features.heads import HEADS

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def build_parser():
    p = argparse.ArgumentParser(prog="benchmarks/heads.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="folder holding the image folders")
    p.add_argument("--datasets", nargs="+", default=["flowers", "cats_vs_dogs"])
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--embeddings", default="embeddings", help="cache folder")
    p.add_argument("--out", default="runs", help="outputs folder (results.jsonl)")
    p.add_argument("--n-jobs", type=int, default=-1)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from features import cache as store
    from features.data import load_folder
    from features.extraction.run import extract
    from features.heads.classify import classify_cache

    rows = []
    for name in args.datasets:
        source = load_folder(Path(args.root) / name)
        result = extract(source, args.backbone, out_dir=args.embeddings, progress=False)
        cache = store.read_cache(result.path, verify=True)
        print(f"{name}: {len(cache.labels)} images, extraction {result.seconds:.1f} s "
              f"({'cache hit' if result.cache_hit else 'just now'})", flush=True)
        for head in args.heads:
            r = classify_cache(cache, head, n_jobs=args.n_jobs, out_dir=args.out, features=[str(result.path)])
            rows.append((name, head, r["accuracy"], r["f1_macro"], r["train_seconds"], r["params"]))
            print(f"  {head}: done", flush=True)
    import sklearn

    print(f"\nmachine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}; backbone {args.backbone}")
    print(f"{'dataset':14s} {'head':11s} {'test acc':>9s} {'macro F1':>9s} {'fit s':>7s}  params")
    for name, head, acc, f1, seconds, params in rows:
        print(f"{name:14s} {head:11s} {acc:9.4f} {f1:9.4f} {seconds:7.2f}  {params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
