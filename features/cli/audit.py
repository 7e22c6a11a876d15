"""Audit a dataset's photos from a feature cache: duplicates and leakage, likely label errors, outliers.

examples:
  python audit.py                                   # the cache extract.py made or re-used last
  python audit.py --features embeddings/flowers/efficientnet_lite0-224.h5 --json
  python audit.py --near 0.9 --data-dir photos/     # a looser near-copy threshold; the photos moved

From the cache's embeddings, labels and splits, in seconds:
  duplicates  the same file (its bytes), the same pixels (identical embeddings), and near copies
              (cosine similarity of the embeddings at least --near); a pair across train or val
              and test is a leak, and the default head's test accuracy is given without the leaked
              photos
  labels      cleanlab's likely label errors, from out-of-fold probabilities of logistic
              regression (--folds-fold cross-validation; no photo scored by a head trained on it)
  outliers    photos far from every other photo (cleanlab's out-of-distribution score on the
              embeddings), past Tukey's fence
  balance     photos per class and split
A folder under --out holds audit.json, contact sheets (PNG) of each list and README.md linking
them; with --json the last line of output is the audit as one JSON object. The photos are read
only for the file digests and the thumbnails: a photo gone since extraction is drawn as a tile
that says so.
"""

from __future__ import annotations

import argparse

from features.cli import common
from features.cli.common import HelpFormatter, add_common_flags, print_json, program


def build_parser() -> argparse.ArgumentParser:
    from features.auditing.duplicates import NEAR
    from features.auditing.labels import FOLDS
    from features.auditing.page import MAX_TOP, TOP

    p = argparse.ArgumentParser(prog=program("audit.py"), description=__doc__, formatter_class=HelpFormatter)
    data = p.add_argument_group("features")
    data.add_argument("--features", metavar="H5", help="a feature cache made by extract.py (default: the cache "
                                                       "extract.py made or re-used last, under --embeddings-dir)")
    data.add_argument("--embeddings-dir", default="embeddings", metavar="DIR",
                      help="where to look for the newest cache")
    data.add_argument("--data-dir", metavar="DIR",
                      help="where the photos are now, if not where the cache was made from")
    common.add_corrections_flag(data)
    audit = p.add_argument_group("audit")
    audit.add_argument("--near", type=float, default=NEAR,
                       help="cosine similarity of the embeddings from which two photos are near copies")
    audit.add_argument("--folds", type=int, default=FOLDS, help="folds of the out-of-fold probabilities")
    audit.add_argument("--top", type=int, default=TOP, help=f"photos or pairs drawn on each contact sheet (at most "
                                                            f"{MAX_TOP})")
    audit.add_argument("--seed", type=int, default=0, help="seed of the folds and the head")
    audit.add_argument("--n-jobs", type=int, default=-1, help="parallel jobs of the head's search (-1: all cores)")
    out = p.add_argument_group("outputs")
    out.add_argument("--out", default="audits", metavar="DIR", help="where the audit's folder is written")
    add_common_flags(p)
    return p


def _audit_from_flags(args) -> None:
    from features.auditing import audit, write_audit
    from features.auditing.page import check_top, describe_duplicates
    from features.cache import newest_cache
    from features.outputs import check_output_folder

    check_top(args.top)  # before the audit's seconds are spent
    check_output_folder(args.out)
    found = audit(args.features or newest_cache(args.embeddings_dir), near=args.near, data_dir=args.data_dir,
                  folds=args.folds, seed=args.seed, n_jobs=args.n_jobs, corrections=args.corrections)
    folder, summary = write_audit(found, args.out, args.top)
    leak = summary["leakage"]
    without = leak["test_accuracy_without_leaked"]
    print(f"audit of {summary['dataset']} / {summary['backbone']}: {summary['photos']} photos, "
          f"{sum(summary['seconds'].values()):.1f} s\n"
          f"  duplicates: {describe_duplicates(summary['duplicates'], summary['near_threshold'])}; "
          f"{leak['leaked']} of {leak['test_photos']} test photos have a copy in train or val\n"
          f"  test accuracy of logreg {leak['test_accuracy']:.4f}"
          + (f", {without:.4f} without the leaked photos" if leak["leaked"] and without is not None else "") + "\n"
          f"  likely label errors: {len(summary['label_issues'])}; outliers: {len(summary['outliers'])}\n"
          + (f"  photos not at hand: {summary['photos_not_at_hand']} (their thumbnails say so)\n"
             if summary["photos_not_at_hand"] else "")
          + (common.corrections_line(summary["corrections"]) + "\n" if summary.get("corrections") else "")
          + f"  pictures and audit.json in {folder} (README.md links them)")
    if args.json:
        print_json(summary)


def main(argv=None) -> int:
    return common.main(build_parser, _audit_from_flags, argv)
