"""Benchmark: best.py at several time limits on the shared datasets, each run from nothing (its own caches and run
folders), one at a time.

examples:
  python benchmarks/best.py                                        # flowers and cats vs dogs at 2, 5 and 15 minutes
  python benchmarks/best.py --datasets flowers --limits 5m --out /tmp/best

Printed: one line a run (the chosen candidate, its validation and test accuracy, frozen EfficientNet-Lite0 with a
logistic regression's test accuracy from the same leaderboard, the wall seconds against the limit), then the
leaderboards' paths. Run it alone on the machine: the search measures this machine's rates and its budget is
wall-clock time. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from features.budget.clock import parse_duration
from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets"


def build_parser():
    p = argparse.ArgumentParser(prog="benchmarks/best.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--root", default=str(DEFAULT_DATA), help="folder holding the image folders")
    p.add_argument("--datasets", nargs="+", default=["flowers", "cats_vs_dogs"])
    p.add_argument("--limits", nargs="+", default=["2m", "5m", "15m"], help="time limits, as best.py takes them")
    p.add_argument("--out", default="runs/best-benchmark", help="a folder of its own for each run's outputs")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    lines = []
    for dataset in args.datasets:
        for limit in args.limits:
            seconds = parse_duration(limit)
            folder = Path(args.out).resolve() / f"{dataset}-{limit}-{time.strftime('%Y%m%d-%H%M%S')}"
            start = time.monotonic()
            done = subprocess.run([sys.executable, str(ROOT / "best.py"), "--data-dir", str(Path(args.root) / dataset),
                                   "--time-limit", limit, "--out", str(folder / "runs"), "--embeddings",
                                   str(folder / "embeddings"), "-q", "--json"],
                                  capture_output=True, text=True, cwd=ROOT)
            wall = time.monotonic() - start
            (folder / "best.log").parent.mkdir(parents=True, exist_ok=True)
            (folder / "best.log").write_text(done.stdout + done.stderr)
            if done.returncode != 0:
                print(f"{dataset} {limit}: best.py exited {done.returncode}; see {folder / 'best.log'}", flush=True)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            frozen = next((r for r in result["leaderboard"] if r["candidate"] == "efficientnet_lite0 logreg"), None)
            line = (f"{dataset} {limit}: chosen {result['chosen']}, val {result['val_accuracy']:.4f}, test "
                    f"{result['accuracy']:.4f} (frozen Lite0 + logreg: test "
                    f"{frozen['test_accuracy']:.4f}); {wall:.0f} s wall of {seconds:.0f} s "
                    f"({wall / seconds:.3f} of the limit); {len(result['leaderboard'])} candidates, skipped: "
                    f"{', '.join(result['skipped']) or 'none'}")
            print(line, flush=True)
            lines.append((line, result["search_dir"]))
    for _, where in lines:
        print(f"  leaderboard {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
