"""Benchmark: the head that streams (classify.py --model sgd) on caches larger than a head holds.

examples:
  python benchmarks/streaming.py                                  # 250k, 500k and 1M rows, then accuracy
  python benchmarks/streaming.py --rows 20000 40000 --no-write    # a quick look, print only

Part 1, memory and time: for each row count, a synthetic cache of that many rows x --dim
float32 embeddings (five classes of Gaussian clusters, rows in class order as a real
listing is, split 70/15/15) is written with the store module in --work-dir, and
`classify.py --model sgd --alpha A --epochs E` runs on it in a fresh process, once with
1 epoch and once with --epochs: the peak resident memory of each process (wait4's
ru_maxrss) and seconds per epoch ((fit with E - fit with 1) / (E - 1), so the scaler's pass
and the test predictions are left out) are printed. Each cache is deleted after use.
Part 2, accuracy: sgd (alpha and epochs chosen on the validation split) against logreg
(C chosen by cross-validation) on the caches of the shared photos, test accuracy of each.
Writes its figures into BENCHMARKS.md, in a section of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from features.cli import HelpFormatter
from features.results.report import write_printed_section

ROOT = Path(__file__).resolve().parents[1]

SECTION = "streaming"
SHARED = ROOT.parent / "shared" / "datasets"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streaming.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    p.add_argument("--dim", type=int, default=1280, help="embedding width (efficientnet_lite0's)")
    p.add_argument("--alpha", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=3)
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
            writer.append(X, y, [f"img{i}.jpg" for i in range(start, start + len(y))],
                          np.arange(start, start + len(y)), splits[start:start + block])
        writer.finish({"dataset": "synthetic", "backbone": "synthetic", "image_size": 0, "pooling": "avg",
                       "weights": "none", "weights_sha256": "", "seed": seed, "split": [0.7, 0.15, 0.15],
                       "class_names": names, "seconds": 0.0, "fingerprint": "synthetic"})


def run_classify(argv: list[str]) -> tuple[dict, float]:
    """classify.py in a fresh process: (its --json result, its own peak resident memory in GB)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "classify.py"), *argv, "--json", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"classify.py {' '.join(argv)} failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1e6  # kB -> GB


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    lines = [f"sgd streaming: {args.dim}-wide float32 rows, alpha {args.alpha}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')}"]
    print(lines[0], flush=True)
    per_epoch = {}
    with tempfile.TemporaryDirectory(prefix="streaming-", dir=args.work_dir) as work:
        for rows in args.rows:
            path = Path(work) / f"synthetic-{rows}.h5"
            start = time.perf_counter()
            write_synthetic(path, rows, args.dim)
            written = time.perf_counter() - start
            size = path.stat().st_size / 1e9
            common = ["--model", "sgd", "--features", str(path), "--alpha", str(args.alpha), "--out",
                      str(Path(work) / "runs")]
            one, peak_one = run_classify(common + ["--epochs", "1"])
            many, peak_many = run_classify(common + ["--epochs", str(args.epochs)])
            epoch = (many["fit_seconds"] - one["fit_seconds"]) / (args.epochs - 1)
            per_epoch[rows] = epoch
            line = (f"  {rows:>9,d} rows ({size:.2f} GB on disk, written in {written:.0f} s): peak memory "
                    f"{peak_one:.2f} GB (1 epoch), {peak_many:.2f} GB ({args.epochs} epochs); "
                    f"{epoch:.1f} s per epoch; test accuracy {many['accuracy']:.4f}")
            lines.append(line)
            print(line, flush=True)
            path.unlink()
        if len(per_epoch) > 1:
            first = min(per_epoch)
            ratios = ", ".join(f"{rows / first:.0f}x rows: {per_epoch[rows] / per_epoch[first]:.2f}x time"
                               for rows in sorted(per_epoch) if rows != first)
            lines.append(f"  seconds per epoch against {first:,d} rows: {ratios}")
            print(lines[-1], flush=True)
    if args.datasets:
        lines.append("sgd against logreg on the shared photos (efficientnet_lite0 caches, test accuracy):")
        print(lines[-1], flush=True)
        from features.device import quiet_tensorflow

        quiet_tensorflow()
        from features.data import load_folder
        from features.extract.run import extract

        for name in args.datasets:
            source = load_folder(Path(args.root) / name)
            cache = extract(source, "efficientnet_lite0", out_dir=args.embeddings, progress=False).path
            with tempfile.TemporaryDirectory(prefix="streaming-runs-") as runs:
                results = {head: run_classify(["--model", head, "--features", str(cache), "--out", runs])[0]
                           for head in ("sgd", "logreg")}
            sgd, logreg = results["sgd"], results["logreg"]
            gap = (sgd["accuracy"] - logreg["accuracy"]) * 100
            line = (f"  {name:13s} sgd {sgd['accuracy']:.4f} ({sgd['params']}, val {sgd['val_accuracy']:.4f}), "
                    f"logreg {logreg['accuracy']:.4f} ({logreg['params']}): {gap:+.2f} points "
                    f"(target within 1: {'met' if abs(gap) <= 1 else 'missed'})")
            lines.append(line)
            print(line, flush=True)
    if not args.no_write:
        write_printed_section(Path(args.out), SECTION, "Streaming heads: `benchmarks/streaming.py`",
                              ("`classify.py --model sgd` reads the cache a block of rows at a time; peak memory "
                               "is the classify.py process's own, as printed"), lines)
        print(f"wrote the {SECTION} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
