"""Score an ensemble of run folders: their probabilities averaged, on the same test images.

examples:
  python ensemble.py runs/<finetune run>/ runs/<logreg run>/            # these runs, averaged
  python ensemble.py runs/*flowers* --select val                       # the best set, chosen on val
  python ensemble.py runs/*flowers* --select weighted                  # ... a run may count twice

Each run folder of classify.py and finetune.py holds its validation and test probabilities
(probabilities.npz), so nothing is decoded again. --select val chooses the members greedily
on the validation split (start from the best run, add the one that improves the average's
validation accuracy most, ties broken by log loss, while one does); --select weighted lets a run
be chosen again (it then weighs twice) for 25 rounds and keeps the best prefix (Caruana et al.,
ICML 2004); its validation accuracy is then optimistic (the set was chosen on those images), so
the held-out one is printed beside it: each image scored by a set chosen on the other half. The
test split is scored once, for the chosen set. Appends one row (method
"ensemble") to --out/results.jsonl and writes a run folder, which predict.py takes.
"""

from __future__ import annotations

import argparse
import sys

from features.cli import common
from features.cli.common import HelpFormatter, add_common_flags, print_json, program


def build_parser() -> argparse.ArgumentParser:
    from features.reports.ensemble import SELECTIONS

    p = argparse.ArgumentParser(prog=program("ensemble.py"), description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders of classify.py or finetune.py")
    p.add_argument("--select", default="all", choices=SELECTIONS,
                   help="all: every run given; val: greedy selection on the validation split; weighted: the same "
                        "with replacement (Caruana et al., 2004): a run chosen k times weighs k")
    p.add_argument("--max-members", type=int, metavar="N", help="with --select val: at most N runs")
    p.add_argument("--out", default="runs", metavar="DIR", help="outputs folder: run folders and results.jsonl")
    add_common_flags(p)
    return p


def _ensemble_from_flags(args) -> None:
    from features.errors import UsageError
    from features.records.metrics import summary_line
    from features.reports.ensemble import score_ensemble

    if args.max_members is not None and args.max_members < 1:
        raise UsageError(f"{{max_members}} {args.max_members}: must be at least 1")
    result = score_ensemble(args.run_dirs, args.select, max_members=args.max_members, out_dir=args.out)
    for m in result["members_report"]:
        mark = "*" if m["chosen"] else " "
        print(f"{mark} {m['label']:40s} val {m['val_accuracy']:.4f}  test {m['test_accuracy']:.4f}  {m['run_dir']}")
    held = result.get("val_accuracy_heldout")
    print(f"ensemble of {len(set(result['members']))} ({args.select}) on {result['dataset']}: val "
          f"{result['val_accuracy']:.4f}{'' if held is None else f' (held out: {held:.4f})'}; "
          f"{summary_line(result['metrics'])}\n  run folder {result['run_dir']}")
    if args.json:
        print_json(result)


def main(argv=None) -> int:
    return common.main(build_parser, _ensemble_from_flags, argv)


if __name__ == "__main__":
    sys.exit(main())
