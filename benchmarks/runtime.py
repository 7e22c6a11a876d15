"""Benchmark: extraction's network on ONNX Runtime against TensorFlow's frozen graph, on this machine.

examples:
  python benchmarks/runtime.py                          # the shared flowers, 3 interleaved rounds
  python benchmarks/runtime.py --rounds 1 --images 640 --no-write

Per round, interleaved so that drifts of the machine's speed hit every figure alike:
  - the network alone on the same in-memory batches (decoded up front): TensorFlow's frozen
    graph, ONNX Runtime with every core, and with one thread fewer (a core left to decoding);
  - extract.py's steady rate after set-up (--force) with --runtime tf, onnx, and onnx with
    one thread fewer.
Then the one-time conversion's seconds, and logistic regression fitted on the cache of each
runtime: how many of the test photos' predicted classes differ. Writes its section of
BENCHMARKS.md. A benchmark, not a test: compare figures from one run on one machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from sections import write_printed_section  # benchmarks/sections.py

from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
SECTION = "runtime"
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "flowers"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/runtime.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="image folder, one sub-folder per class")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=0, help="images of the extraction runs (0: the whole folder)")
    p.add_argument("--memory-images", type=int, default=640, help="images of the in-memory network runs")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="the file whose section this writes")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def _rate(fn, batches) -> float:
    fn(batches[0])  # warm-up
    start, n = time.perf_counter(), 0
    for batch in batches:
        np.asarray(fn(batch))
        n += len(batch)
    return n / (time.perf_counter() - start)


def _predictions(run_dir: Path) -> list[tuple[str, str]]:
    with open(run_dir / "predictions.csv", newline="") as f:
        return [(row["id"], row["predicted"]) for row in csv.DictReader(f)]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnxruntime
    import tensorflow as tf

    from features.cache import read_cache
    from features.data import image_batches, load_folder
    from features.extraction.run import extract
    from features.heads.classify import classify
    from features.models import create_backbone, embedding_function, onnx
    from features.models.registry import resolve_backbone

    lines = []

    def say(text=""):
        lines.append(text)
        print(text, flush=True)

    full = load_folder(args.data_dir)
    source = full if args.images <= 0 else load_folder(args.data_dir,
                                                       max_per_class=args.images // len(full.class_names))
    sample = load_folder(args.data_dir, max_per_class=max(1, args.memory_images // len(full.class_names)))
    backbone = resolve_backbone(args.backbone)
    cores = onnx.cores()
    say(f"machine: {cores} cores, TensorFlow {tf.__version__}, ONNX Runtime {onnxruntime.__version__}; "
        f"{backbone.name} at {backbone.image_size} px, batch {args.batch_size}; {len(source)} images "
        f"({Path(args.data_dir).name}), {len(sample)} in memory")
    with tempfile.TemporaryDirectory(prefix="tl-runtime-") as work:
        work = Path(work)
        start = time.perf_counter()
        first = extract(source, backbone, out_dir=work / "emb-onnx", runtime="onnx", batch_size=args.batch_size,
                        progress=False)
        say(f"conversion (once per backbone, size, weights, pooling, TTA): {first.conversion_seconds:.1f} s, "
            f"then {first.n_images} images in {first.seconds:.1f} s ({time.perf_counter() - start:.1f} s in all)")
        tf_cache = extract(source, backbone, out_dir=work / "emb-tf", runtime="tf", batch_size=args.batch_size,
                           progress=False)
        model_file = next((work / "emb-onnx" / "onnx").glob("*.onnx"))
        batches = [images.numpy() for _, images in image_batches(sample, backbone.image_size, args.batch_size)]
        frozen = embedding_function(create_backbone(backbone), backbone.image_size)
        sessions = {threads: onnx.OnnxEmbedder(model_file, threads) for threads in {cores, max(1, cores - 1)}}
        fewer = max(1, cores - 1)
        figures: dict[str, list[float]] = {}
        for r in range(args.rounds):
            figures.setdefault("net tf", []).append(_rate(frozen, batches))
            for threads, session in sessions.items():
                figures.setdefault(f"net onnx {threads}", []).append(_rate(session, batches))
            for name, runtime, threads in (("extract tf", "tf", cores), ("extract onnx", "onnx", cores),
                                           (f"extract onnx {fewer}", "onnx", fewer)):
                onnx.cores = (lambda t=threads: t)  # ONNX Runtime's intra-op threads for this run
                result = extract(source, backbone, out_dir=work / f"emb-{runtime}", runtime=runtime,
                                 batch_size=args.batch_size, force=True, progress=False)
                figures.setdefault(name, []).append(result.steady_images_per_second)
            say(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figures.items()) + " img/s")
        median = {k: float(np.median(v)) for k, v in figures.items()}
        say()
        say(f"{'img/s, median of ' + str(args.rounds) + ' rounds':36s} {'TensorFlow':>10s} {'ONNX Runtime':>13s} "
            f"{f'ORT {fewer} thr':>11s}")
        say(f"{'network alone, in-memory batches':36s} {median['net tf']:10.1f} {median[f'net onnx {cores}']:13.1f} "
            f"{median[f'net onnx {fewer}']:11.1f}")
        say(f"{'extract.py after set-up':36s} {median['extract tf']:10.1f} {median['extract onnx']:13.1f} "
            f"{median[f'extract onnx {fewer}']:11.1f}")
        best_net = max(median[f"net onnx {cores}"], median[f"net onnx {fewer}"], median["net tf"])
        best_extract = max(median["extract onnx"], median[f"extract onnx {fewer}"])
        say()
        say(f"network alone: ONNX Runtime {median[f'net onnx {cores}'] / median['net tf']:.2f}x TensorFlow's frozen "
            f"graph (the new ceiling: {best_net:.1f} img/s)")
        say(f"extract.py --runtime onnx: {median['extract onnx'] / median['extract tf']:.2f}x --runtime tf "
            f"(target >= 1.3x), {median['extract onnx'] / best_net:.3f} of the ceiling (target >= 0.90); "
            f"{cores} threads {'faster' if median['extract onnx'] >= median[f'extract onnx {fewer}'] else 'slower'} "
            f"than {fewer} (best {best_extract:.1f} img/s)")
        x_onnx, x_tf = read_cache(first.path), read_cache(tf_cache.path)
        say(f"embeddings: largest difference between the two runtimes' caches "
            f"{np.abs(x_onnx.embeddings - x_tf.embeddings).max():.2e}")
        predicted = {}
        for name, cache in (("onnx", x_onnx), ("tf", x_tf)):
            row = classify(cache, "logreg", n_jobs=-1, out_dir=work / f"runs-{name}")
            predicted[name] = (_predictions(Path(row["run_dir"])), row["accuracy"], row["params"])
        differ = sum(a != b for a, b in zip(predicted["onnx"][0], predicted["tf"][0]))
        say(f"logreg on each cache (C chosen by cross-validation on train): test accuracy "
            f"{predicted['onnx'][1]:.4f} (onnx, {predicted['onnx'][2]}) and {predicted['tf'][1]:.4f} (tf, "
            f"{predicted['tf'][2]}); {differ} of {len(predicted['tf'][0])} test predictions differ")
    if not args.no_write:
        write_printed_section(Path(args.out), SECTION, "Extraction's runtime: `benchmarks/runtime.py`",
                              ("The network alone on the same in-memory batches, and extract.py's steady rate "
                               "after set-up, with TensorFlow's frozen graph and ONNX Runtime, interleaved rounds "
                               "in one run"), lines)
        print(f"wrote the {SECTION} section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
