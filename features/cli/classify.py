"""Train a scikit-learn head on cached embeddings and score it on the cache's test split.

examples:
  python classify.py --model svm                          # the cache extract.py made or re-used last
  python classify.py --model logreg --features embeddings/flowers/efficientnet_lite0-224.h5
  python classify.py --model logreg --features a.h5 b.h5  # two backbones' embeddings side by side
  python classify.py --model logreg --stream --features big.h5   # never holds the embeddings in memory

Hyper-parameters (C, gamma, k) are chosen by stratified cross-validation on the training
split (--C etc. fix one), then the head is refitted on train + val and scored on test:
the same test images that every other method is scored on. logreg with --stream (or by
itself, when the matrix would not fit in memory) reads the cache a block of rows at a time
and reaches the same optimum by L-BFGS, C chosen on the validation split; sgd always streams
and chooses alpha and its epochs on the validation split. Each run writes a folder under
--out (head.skops, metrics.json, report.txt, confusion.png, top_losses.png) and appends one row to
--out/results.jsonl.
"""

from __future__ import annotations

import argparse
import sys

from features.cli import common
from features.cli.common import (
    HelpFormatter,
    add_common_flags,
    add_corrections_flag,
    corrections_line,
    print_json,
    program,
)
from features.heads.registry import HEADS  # scikit-learn itself is imported only when a head is made


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program("classify.py"), description=__doc__, formatter_class=HelpFormatter)
    data = p.add_argument_group("features")
    data.add_argument("--features", nargs="+", metavar="H5",
                      help="feature cache(s) made by extract.py; several are concatenated "
                           "(default: the cache extract.py made or re-used last, under --embeddings-dir)")
    data.add_argument("--embeddings-dir", default="embeddings", metavar="DIR",
                      help="where to look for the newest cache")
    add_corrections_flag(data)
    head = p.add_argument_group("head")
    head.add_argument("--model", dest="head", default="logreg", help=f"one of: {', '.join(HEADS)}")
    head.add_argument("--C", type=float, help="fix the regularisation C (logreg, svm, linear_svm)")
    head.add_argument("--gamma", help="fix the RBF kernel's gamma (svm): a number, 'scale' or 'auto'")
    head.add_argument("--k", type=int, help="fix the number of neighbours (knn)")
    head.add_argument("--alpha", type=float, help="fix the regularisation alpha (sgd)")
    head.add_argument("--epochs", type=int,
                      help="passes over the rows (sgd; default: chosen on the validation split)")
    head.add_argument("--stream", action="store_true",
                      help="read the cache a block of rows at a time (logreg: the same optimum by L-BFGS, C chosen on "
                           "the validation split); logreg streams by itself when the matrix would not fit in memory")
    head.add_argument("--class-weight", default="none", choices=("none", "balanced"),
                      help="'balanced' reweights classes by inverse frequency (imbalanced folders)")
    head.add_argument("--cv", type=int, default=5, help="folds of the hyper-parameter search")
    head.add_argument("--n-jobs", type=int, default=-1, help="parallel jobs of the search (-1: all cores)")
    head.add_argument("--seed", type=int, default=0, help="seed of the search folds and estimators")
    out = p.add_argument_group("run")
    out.add_argument("--out", default="runs", metavar="DIR", help="outputs folder: run folders and results.jsonl")
    add_common_flags(p)
    return p


def _classify_from_flags(args) -> None:
    from features.heads.classify import classify
    from features.records.metrics import summary_line

    result = classify(args.features, args.head, fixed={"C": args.C, "gamma": args.gamma, "k": args.k,
                                                       "alpha": args.alpha},
                      stream=args.stream, class_weight=None if args.class_weight == "none" else "balanced",
                      cv=args.cv, n_jobs=args.n_jobs, seed=args.seed, epochs=args.epochs, out_dir=args.out,
                      embeddings_dir=args.embeddings_dir, corrections=args.corrections)
    passes = f", {result['passes']} passes over the cache" if result.get("passes") else ""
    print(f"{args.head} on {result['dataset']} / {result['backbone']}: {summary_line(result['metrics'])}\n"
          f"  params {result['params']}, search {result['search_seconds']:.2f} s, "
          f"fit {result['fit_seconds']:.2f} s{passes}, predict {result['predict_seconds']:.3f} s\n"
          f"  run folder {result['run_dir']}")
    if result.get("corrections"):
        print(corrections_line(result["corrections"]))
    if args.json:
        print_json(result)


def main(argv=None) -> int:
    return common.main(build_parser, _classify_from_flags, argv)


if __name__ == "__main__":
    sys.exit(main())
