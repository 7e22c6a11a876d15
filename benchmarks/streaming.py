"""Benchmark: the heads that stream (classify.py --model logreg --stream, and sgd) on caches larger than a
head holds, and how close the streamed logreg comes to the in-memory one.

examples:
  python benchmarks/streaming.py                                  # 250k, 500k and 1M rows, then accuracy
  python benchmarks/streaming.py --rows 20000 40000 --no-write    # a quick look, print only

Part 1, memory and time: for each row count, a synthetic cache of that many rows x --dim
float32 embeddings (five classes of Gaussian clusters, rows in class order as a real
listing is, split 70/15/15) is written with the cache module in --work-dir, and classify.py
runs on it in a fresh process: `--model logreg --stream` (C chosen on the validation split
along its warm-started path, then refitted on train + val: the whole fit, search included),
and `--model sgd --alpha A --epochs E`. Printed: the peak resident memory of each process
(wait4's ru_maxrss), logreg's passes over the cache, seconds a pass and in all; sgd's
seconds an epoch. Each cache is deleted after use.
Part 2, accuracy: on the caches of the shared photos, logreg streamed (C chosen on
validation), logreg in memory at that same C, and each in-memory default (C by
cross-validation) and sgd: test accuracy, and the share of test predictions the two logregs
at one C give alike. Writes its figures into BENCHMARKS.md, in a section of its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sections import write_printed_section  # benchmarks/sections.py

from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]

SECTION = "streaming"
SHARED = ROOT.parent / "shared" / "datasets"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streaming.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--rows", type=int, nargs="*", default=[250_000, 500_000, 1_000_000])
    p.add_argument("--dim", type=int, default=1280, help="embedding width (efficientnet_lite0's)")
    p.add_argument("--alpha", type=float, default=1e-4, help="sgd's alpha in part 1")
    p.add_argument("--epochs", type=int, default=3, help="sgd's epochs in part 1")
    p.add_argument("--work-dir", default=tempfile.gettempdir(), help="where the synthetic caches are written")
    p.add_argument("--datasets", nargs="*", default=["flowers", "cats_vs_dogs"],
                   help="folders under --root for part 2 (none: skip it)")
    p.add_argument("--root", default=str(SHARED))
    p.add_argument("--embeddings", default=str(ROOT / "embeddings"), help="cache folder of part 2's extractions")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="the report to write the section into")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def write_synthetic(path: Path, rows: int, dim: int, classes: int = 5, block: int = 20_000, seed: int = 0):
    """A complete cache of ``rows`` synthetic embeddings, written a block at a time."""
    import numpy as np

    from features import cache as store

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim)).astype(np.float32)
    labels = np.repeat(np.arange(classes), -(-rows // classes))[:rows]  # class after class, as a listing
    splits = rng.choice(3, rows, p=[0.7, 0.15, 0.15]).astype(np.uint8)
    names = [f"class{c}" for c in range(classes)]
    with store.CacheWriter(path, dim, names, chunk_rows=1024) as writer:
        for start in range(0, rows, block):
            y = labels[start:start + block]
            X = centres[y] + rng.normal(0, 4.0, (len(y), dim)).astype(np.float32)
            writer.append(X, y, ids=[f"img{i}.jpg" for i in range(start, start + len(y))],
                          index=np.arange(start, start + len(y)), splits=splits[start:start + block])
        writer.finish({"dataset": "synthetic", "backbone": "synthetic", "image_size": 0, "pooling": "avg",
                       "weights": "none", "weights_sha256": "", "seed": seed, "split": [0.7, 0.15, 0.15],
                       "class_names": names, "seconds": 0.0, "fingerprint": "synthetic"})


def run_classify(argv: list[str]) -> tuple[dict, float, float]:
    """classify.py in a fresh process: (its --json result, its own peak resident memory in GB, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "classify.py"), *argv, "--json", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"classify.py {' '.join(argv)} failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1e6, time.perf_counter() - start


def predicted(run_dir: str) -> dict[str, str]:
    """Each test image's predicted class, from a run folder's predictions.csv."""
    with open(Path(run_dir) / "predictions.csv", newline="") as f:
        return {row["id"]: row["predicted"] for row in csv.DictReader(f)}


def part1(args, say) -> None:
    say(f"streaming heads on synthetic caches: {args.dim}-wide float32 rows, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}")
    seconds_per_pass = {}
    with tempfile.TemporaryDirectory(prefix="streaming-", dir=args.work_dir) as work:
        for rows in args.rows:
            path = Path(work) / f"synthetic-{rows}.h5"
            start = time.perf_counter()
            write_synthetic(path, rows, args.dim)
            written = time.perf_counter() - start
            say(f"  {rows:>9,d} rows ({path.stat().st_size / 1e9:.2f} GB on disk, written in {written:.0f} s)")
            base = ["--features", str(path), "--out", str(Path(work) / "runs")]
            lr, peak, wall = run_classify(["--model", "logreg", "--stream", *base])
            fit = lr["search_seconds"] + lr["fit_seconds"]
            seconds_per_pass[rows] = fit / lr["passes"]
            say(f"    logreg streamed: peak memory {peak:.2f} GB; {lr['passes']} passes (C {lr['params']['C']} "
                f"chosen on val), {fit / lr['passes']:.2f} s a pass, fit {fit:.0f} s with the search, "
                f"{wall:.0f} s the whole process; test accuracy {lr['accuracy']:.4f}")
            common = ["--model", "sgd", "--alpha", str(args.alpha), *base]
            one, _, _ = run_classify([*common, "--epochs", "1"])
            many, peak, wall = run_classify([*common, "--epochs", str(args.epochs)])
            epoch = (many["fit_seconds"] - one["fit_seconds"]) / (args.epochs - 1)
            say(f"    sgd (alpha {args.alpha}, {args.epochs} epochs): peak memory {peak:.2f} GB; {epoch:.1f} s an "
                f"epoch, {wall:.0f} s the whole process; test accuracy {many['accuracy']:.4f}")
            path.unlink()
    if len(seconds_per_pass) > 1:
        first = min(seconds_per_pass)
        say("  logreg's seconds a pass against " + f"{first:,d} rows: " + ", ".join(
            f"{rows / first:.0f}x rows: {seconds_per_pass[rows] / seconds_per_pass[first]:.2f}x"
            for rows in sorted(seconds_per_pass) if rows != first))


def part2(args, say) -> None:
    say("logreg streamed against logreg in memory on the shared photos (efficientnet_lite0 caches, test "
        "accuracy):")
    from features.data import load_folder
    from features.device import quiet_tensorflow
    from features.extraction.run import extract

    quiet_tensorflow()
    for name in args.datasets:
        source = load_folder(Path(args.root) / name)
        cache = str(extract(source, "efficientnet_lite0", out_dir=args.embeddings, progress=False).path)
        with tempfile.TemporaryDirectory(prefix="streaming-runs-") as runs:
            base = ["--features", cache, "--out", runs, "--n-jobs", "1"]
            streamed, _, _ = run_classify(["--model", "logreg", "--stream", *base])
            C = str(streamed["params"]["C"])
            same_c, _, _ = run_classify(["--model", "logreg", "--C", C, *base])
            default, _, _ = run_classify(["--model", "logreg", *base])
            sgd, _, _ = run_classify(["--model", "sgd", *base])
            a, b = predicted(streamed["run_dir"]), predicted(same_c["run_dir"])
        alike = sum(a[i] == b[i] for i in a) / len(a)
        gap = (streamed["accuracy"] - same_c["accuracy"]) * 100
        say(f"  {name:13s} streamed {streamed['accuracy']:.4f} (C {C} chosen on val {streamed['val_accuracy']:.4f}, "
            f"{streamed['passes']} passes), in memory at C {C} {same_c['accuracy']:.4f}: {gap:+.2f} points, "
            f"{alike:.2%} of {len(a)} test predictions alike (targets: within 0.2 points, 99.5% alike: "
            f"{'met' if abs(gap) <= 0.2 and alike >= 0.995 else 'missed'})")
        say(f"  {'':13s} in memory with C by cross-validation {default['accuracy']:.4f} ({default['params']}); "
            f"sgd {sgd['accuracy']:.4f} ({sgd['params']})")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    lines = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    if args.rows:
        part1(args, say)
    if args.datasets:
        part2(args, say)
    if not args.no_write:
        write_printed_section(Path(args.out), SECTION, "Streaming heads: `benchmarks/streaming.py`",
                              ("`classify.py --model logreg --stream` (L-BFGS over the cache's blocks) and "
                               "`--model sgd` read the cache a block of rows at a time; peak memory is the "
                               "classify.py process's own, as printed"), lines)
        print(f"wrote the {SECTION} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
