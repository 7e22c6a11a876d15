"""The Ray engine against the local engine on the same photos, this machine, one run each.

examples:
  python benchmarks/scaleout.py                                   # ../shared/datasets/flowers
  python benchmarks/scaleout.py --data-dir PHOTOS --no-write      # print only

Prints, for each engine: images, set-up (for Ray: starting Ray and its actors, then the
first batch; for the local engine: the first batch), images/s after set-up and end to
end; whether the two caches are the same (ids, labels, splits, order, largest embedding
difference); and, with --faults, the seconds a run loses when its actor is killed
mid-run (Ray restarts it), and when extract.py itself (the driver) is killed half-way with
kill -9 and the same command is run again (it resumes from its checkpoints). Writes its
figures into BENCHMARKS.md, in a section of its own that benchmarks/performance.py keeps.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sections import write_printed_section  # benchmarks/sections.py

from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]

SECTION = "scaleout"
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "flowers"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scaleout.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="image folder, one sub-folder per class")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-per-class", type=int, help="a seeded sample of at most K images per class")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the two engines")
    p.add_argument("--faults", action="store_true",
                   help="also time a run whose actor is killed mid-run, and a driver killed half-way and resumed")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="the report to write the section into")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def _command(args, out: Path) -> list[str]:
    argv = [sys.executable, str(ROOT / "extract.py"), "--data-dir", args.data_dir, "--out", str(out), "--engine",
            "ray", "--backbone", args.backbone, "--batch-size", str(args.batch_size), "-q", "--json"]
    return argv + (["--max-per-class", str(args.max_per_class)] if args.max_per_class else [])


def driver_kill(args, source, work: Path, reference) -> str:
    """extract.py --engine ray killed with SIGKILL half-way, then the same command: the time it lost."""
    import json

    import numpy as np

    from features import cache as store

    start = time.perf_counter()
    subprocess.run(_command(args, work / "driver-clean"), capture_output=True, text=True, check=True)
    clean_seconds = time.perf_counter() - start
    out = work / "driver-killed"
    half = max(1, len(source) // 2 // (8 * args.batch_size))  # checkpoints of 8 batches each
    start = time.perf_counter()
    proc = subprocess.Popen(_command(args, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(out.glob("**/*.parts/rows-*.npz"))) < half and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    again = subprocess.run(_command(args, out), capture_output=True, text=True, check=True)
    resumed_seconds = time.perf_counter() - start
    result = json.loads(again.stdout.strip().splitlines()[-1])
    same = np.array_equal(store.read_cache(result["cache"]).embeddings, reference.embeddings)
    return (f"  driver killed (kill -9) after {killed_seconds:.1f} s, {result['resumed_rows']} of "
            f"{result['images']} images checkpointed; the same command resumed in {resumed_seconds:.1f} s: "
            f"{killed_seconds + resumed_seconds:.1f} s in all against {clean_seconds:.1f} s for a clean command "
            f"({killed_seconds + resumed_seconds - clean_seconds:+.1f} s), cache "
            f"{'the same' if same else 'DIFFERENT'}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from features.device import quiet_tensorflow

    quiet_tensorflow()
    import numpy as np

    from features import cache as store
    from features.data import load_folder
    from features.extraction.ray_cluster import local_actor_pids
    from features.extraction.run import extract

    source = load_folder(args.data_dir, max_per_class=args.max_per_class)
    lines = [f"engines: {args.backbone}, batch {args.batch_size}, data "
             f"{os.path.relpath(Path(args.data_dir).resolve(), ROOT)} ({len(source)} images), "
             f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"]
    print(lines[0], flush=True)
    rounds = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="scaleout-") as work:
        # Interleaved rounds, medians compared: this shared machine's speed drifts by 2x between minutes.
        for n in range(args.rounds):
            for engine in ("local", "ray"):
                start = time.perf_counter()
                r = extract(source, args.backbone, batch_size=args.batch_size, out_dir=Path(work) / f"{engine}{n}",
                            engine=engine, progress=False)
                wall = time.perf_counter() - start
                rounds[engine].append((r, wall))
                line = (f"  round {n + 1} {engine:5s}: {r.n_images} images, set-up {r.first_batch_seconds:.1f} s, "
                        f"{r.steady_images_per_second:.1f} img/s after set-up, {r.images_per_second:.1f} img/s "
                        f"end to end ({wall:.1f} s)")
                lines.append(line)
                print(line, flush=True)
        steady = {e: float(np.median([r.steady_images_per_second for r, _ in rs])) for e, rs in rounds.items()}
        results = {e: rs[0] for e, rs in rounds.items()}  # round 1: Ray's set-up includes starting Ray
        a, b = (store.read_cache(results[e][0].path) for e in ("local", "ray"))
        same = (a.ids.tolist() == b.ids.tolist() and np.array_equal(a.labels, b.labels)
                and np.array_equal(a.splits, b.splits) and np.array_equal(a.index, b.index))
        diff = float(np.abs(a.embeddings - b.embeddings).max()) if same else float("nan")
        ratio = steady["ray"] / steady["local"]
        lines += [f"  same cache: ids, labels, splits and row order {'equal' if same else 'DIFFERENT'}, "
                  f"largest embedding difference {diff:.2e}",
                  f"  after set-up, median of {args.rounds} rounds: local {steady['local']:.1f}, ray "
                  f"{steady['ray']:.1f} img/s: ray / local {ratio:.3f}x (target >= 0.85x: "
                  f"{'met' if ratio >= 0.85 else 'missed'})",
                  f"  set-up in round 1: local {results['local'][0].first_batch_seconds:.1f} s, ray "
                  f"{results['ray'][0].first_batch_seconds:.1f} s (starting Ray and its actor, then one batch)"]
        print("\n".join(lines[-3:]), flush=True)
        if args.faults:
            killed = []

            def kill_first_actor():
                while not killed:
                    if list((Path(work) / "fault").glob("**/*.parts/rows-*.npz")):
                        for pid in local_actor_pids():
                            os.kill(pid, signal.SIGKILL)
                            killed.append(pid)
                    time.sleep(0.05)

            killer = threading.Thread(target=kill_first_actor, daemon=True)
            killer.start()
            start = time.perf_counter()
            r = extract(source, args.backbone, batch_size=args.batch_size, out_dir=Path(work) / "fault",
                        engine="ray", progress=False)
            wall = time.perf_counter() - start
            same_fault = np.array_equal(store.read_cache(r.path).embeddings, b.embeddings)
            clean = rounds["ray"][-1][1]  # the last clean run: Ray already started, as here
            line = (f"  actor killed mid-run: restarted by Ray, {wall:.1f} s against {clean:.1f} s clean "
                    f"({wall - clean:+.1f} s), cache {'the same' if same_fault else 'DIFFERENT'}")
            lines.append(line)
            print(line, flush=True)
            lines.append(driver_kill(args, source, Path(work), b))
            print(lines[-1], flush=True)
    if not args.no_write:
        write_printed_section(Path(args.out), SECTION, "Scale-out: `benchmarks/scaleout.py`",
                              ("The Ray engine (`extract.py --engine ray`, a local Ray on this machine) against "
                               f"the local engine, {args.rounds} interleaved rounds, as printed"), lines)
        print(f"wrote the {SECTION} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
