"""Benchmark: the audit's recall on photos with planted problems, and the near-copy threshold's margin.

examples:
  python benchmarks/audit_planted.py > audit.log 2>&1 &       # all of the shared flowers, planted
  python benchmarks/audit_planted.py --per-class 40           # a quicker subset

A folder is made from the shared flowers (--per-class photos of each class, all by default) with
problems planted, seeded: swapped labels (a photo moved to another class's folder), byte copies,
near copies (re-encoded at JPEG quality 50, centre-cropped to 85%, resized to 60%; each a new
file beside its original) and photos of another kind (the shared cats and dogs, put among the
flowers). extract.py embeds it with EfficientNet-Lite0 and audit.py audits the cache; printed:
the recall on each kind, how many photos each list flags in all, the near copies' similarity to
their originals against the distinct photos' nearest-neighbour similarity (what the default
threshold is chosen from), and the leaked test photos. The folder and the outputs go under
--work (a temporary folder by default) and are removed unless --keep.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared" / "datasets"
VARIANTS = ("jpeg50", "crop85", "resize60")


def _variant(src: Path, dst: Path, kind: str) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        if kind == "crop85":
            w, h = im.size
            dx, dy = int(w * 0.075), int(h * 0.075)
            im = im.crop((dx, dy, w - dx, h - dy))
        elif kind == "resize60":
            im = im.resize((max(1, int(im.width * 0.6)), max(1, int(im.height * 0.6))), Image.BICUBIC)
        im.save(dst, "JPEG", quality=50 if kind == "jpeg50" else 90)


def plant(flowers: Path, others: Path, out: Path, per_class: int | None = None, swapped: int = 20,
          copies: int = 10, near: int = 10, strangers: int = 10, seed: int = 0) -> dict:
    """Make ``out``, a class folder of ``flowers`` with problems planted; return what was planted.

    Returns:
        {"swapped": {id: true class}, "copies": [(original id, copy id)], "near": [(original, copy, kind)],
        "strangers": [id]}, ids relative to ``out`` as a cache stores them.
    """
    rng = random.Random(seed)
    classes = sorted(p.name for p in flowers.iterdir() if p.is_dir())
    chosen = {}
    for c in classes:
        files = sorted(p.name for p in (flowers / c).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        chosen[c] = files if per_class is None else rng.sample(files, min(per_class, len(files)))
    for c in classes:
        (out / c).mkdir(parents=True)
        for name in chosen[c]:
            shutil.copyfile(flowers / c / name, out / c / name)
    every = [(c, n) for c in classes for n in chosen[c]]
    picked = rng.sample(every, swapped + copies + near * len(VARIANTS))
    truth = {"swapped": {}, "copies": [], "near": [], "strangers": []}
    for c, n in picked[:swapped]:  # moved to another class: its label is now wrong
        wrong = rng.choice([k for k in classes if k != c])
        (out / c / n).rename(out / wrong / n)
        truth["swapped"][f"{wrong}/{n}"] = c
    rest = picked[swapped:]
    for c, n in rest[:copies]:
        copy = f"copy_{Path(n).stem}{Path(n).suffix}"
        shutil.copyfile(out / c / n, out / c / copy)
        truth["copies"].append((f"{c}/{n}", f"{c}/{copy}"))
    for k, (c, n) in enumerate(rest[copies:]):
        kind = VARIANTS[k // near]
        copy = f"{kind}_{Path(n).stem}.jpg"
        _variant(out / c / n, out / c / copy, kind)
        truth["near"].append((f"{c}/{n}", f"{c}/{copy}", kind))
    strays = sorted(p for d in sorted(others.iterdir()) if d.is_dir() for p in sorted(d.iterdir()))
    for p in rng.sample(strays, strangers):
        c = rng.choice(classes)
        name = f"stranger_{p.parent.name}_{p.name}"
        shutil.copyfile(p, out / c / name)
        truth["strangers"].append(f"{c}/{name}")
    return truth


def recall(truth: dict, found: dict) -> dict:
    """Per planted kind: (found, planted)."""
    copies = found["duplicates"]
    near = {frozenset((d["a"], d["b"])) for d in copies["near"]}
    groups = [set(g["ids"]) for g in copies["groups"]]

    def together(pair) -> bool:  # a near pair, or both in one group of exact copies
        return frozenset(pair) in near or any(set(pair) <= g for g in groups)

    issues = {d["id"] for d in found["label_issues"]}
    outliers = {d["id"] for d in found["outliers"]}
    result = {"swapped labels": (sum(i in issues for i in truth["swapped"]), len(truth["swapped"])),
              "byte copies": (sum(together(p) for p in truth["copies"]), len(truth["copies"]))}
    for kind in VARIANTS:
        planted = [(a, b) for a, b, k in truth["near"] if k == kind]
        result[f"near copies ({kind})"] = (sum(together(p) for p in planted), len(planted))
    result["another kind"] = (sum(s in outliers for s in truth["strangers"]), len(truth["strangers"]))
    return result


def _run(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, *argv, "--json"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared datasets folder")
    parser.add_argument("--per-class", type=int, default=None, help="flowers of each class (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="where the folder and outputs go")
    parser.add_argument("--keep", action="store_true", help="keep the planted folder and the outputs")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="audit-planted-"))
    try:
        truth = plant(args.shared / "flowers", args.shared / "cats_vs_dogs", work / "planted", args.per_class,
                      seed=args.seed)
        cache = _run(["extract.py", "--data-dir", str(work / "planted"), "--out", str(work / "embeddings"), "-q"])
        found = _run(["audit.py", "--features", cache["cache"], "--out", str(work / "audits"), "-q"])
        print(f"planted folder: {found['photos']} photos ({args.per_class or 'all'} flowers a class), seed "
              f"{args.seed}; audit {sum(found['seconds'].values()):.1f} s")
        for kind, (hit, n) in recall(truth, found).items():
            print(f"  {kind:<24} recall {hit}/{n} = {hit / n:.2f}")
        copies = found["duplicates"]
        print(f"  flagged in all: {len(copies['groups'])} groups of exact copies, {copies['near_pairs']} near pairs, "
              f"{len(found['label_issues'])} label issues, "
              f"{len(found['outliers'])} outliers")
        near = _similarities(cache["cache"], truth)
        for kind in VARIANTS:
            values = [v for (k, v) in near if k == kind]
            print(f"  {kind}: similarity to its original min {min(values):.4f}, median {np.median(values):.4f}")
        distinct = _distinct_nearest(cache["cache"], truth)
        print(f"  distinct photos' nearest-neighbour similarity: median {np.median(distinct):.4f}, "
              f"99th percentile {np.percentile(distinct, 99):.4f}, above {found['near_threshold']}: "
              f"{int((distinct >= found['near_threshold']).sum())} of {len(distinct)}")
        leak = found["leakage"]
        print(f"  leaked test photos: {leak['leaked']} of {leak['test_photos']}; test accuracy "
              f"{leak['test_accuracy']:.4f}, without them {leak['test_accuracy_without_leaked']:.4f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _rows(path):
    from features.auditing.duplicates import normalised
    from features.cache import read_cache

    cache = read_cache(path)
    return {str(i): r for r, i in enumerate(cache.ids)}, normalised(cache.embeddings)


def _similarities(path, truth) -> list[tuple[str, float]]:
    rows, unit = _rows(path)
    return [(k, float(unit[rows[a]] @ unit[rows[b]])) for a, b, k in truth["near"]]


def _distinct_nearest(path, truth) -> np.ndarray:
    """Each original photo's nearest-neighbour similarity among the other originals (the planted copies left out)."""
    from features.auditing.duplicates import neighbours

    rows, unit = _rows(path)
    planted = {b for _, b in truth["copies"]} | {b for _, b, _ in truth["near"]} | set(truth["strangers"])
    keep = np.array(sorted(r for i, r in rows.items() if i not in planted))
    _, _, _, nearest = neighbours(unit[keep], 2.0)
    return nearest


if __name__ == "__main__":
    sys.exit(main())
