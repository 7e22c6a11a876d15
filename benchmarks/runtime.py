"""Benchmark: extraction's network on TensorFlow, ONNX Runtime and OpenVINO, at fp32 and bf16, on this machine.

examples:
  python benchmarks/runtime.py                          # the shared flowers and cats vs dogs, 3 rounds
  python benchmarks/runtime.py --rounds 1 --images 640 --no-accuracy --no-write

Per round, interleaved so that drifts of the machine's speed hit every figure alike:
  - the network alone on the same in-memory batches (decoded up front): TensorFlow's frozen graph,
    ONNX Runtime, OpenVINO at fp32, at bf16 (one stream of every core), and at bf16 in throughput
    mode (two streams of one thread, each batch split between them);
  - the decode pipeline alone (extraction's own tf.data pipeline, no network);
  - extract.py's steady rate after set-up (--force) with --runtime tf, onnx, openvino at fp32 and
    openvino at bf16.
Then: the pipeline's limit (the rate at which the cores could decode and embed one after the other, at
the rates measured alone) and how near extract.py comes to it; the largest difference between the
fp32 runtimes' caches; and the accuracy of each precision: logistic regression, 5-fold cross-validated
(the same folds) on the fp32 and the bf16 cache of each dataset, and its test predictions.
Writes its section of BENCHMARKS.md. A benchmark, not a test: compare figures from one run on one machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from sections import write_printed_section  # benchmarks/sections.py

from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
SECTION = "runtime"
SHARED = ROOT.parent / "shared" / "datasets"
C_GRID = (0.01, 0.1, 1.0)  # logreg's: the best mean of the 5 folds is each precision's figure


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/runtime.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default=str(SHARED / "flowers"), help="the timed image folder")
    p.add_argument("--accuracy-dirs", nargs="*", default=[str(SHARED / "flowers"), str(SHARED / "cats_vs_dogs")],
                   help="folders whose fp32 and bf16 caches are compared by 5-fold logistic regression")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=0, help="images of the extraction runs (0: the whole folder)")
    p.add_argument("--memory-images", type=int, default=640, help="images of the in-memory network runs")
    p.add_argument("--no-accuracy", action="store_true", help="skip the precisions' accuracy")
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


def _decode_rate(source, size: int, batch_size: int) -> float:
    """The extraction's decode pipeline alone: images/s through tf.data, nothing embedded."""
    from features.data import headers_for, image_batches

    headers = headers_for(source, size)
    start, n = time.perf_counter(), 0
    for index, _ in image_batches(source, size, batch_size=batch_size, indices=None, headers=headers):
        n += len(index)
    return n / (time.perf_counter() - start)


def _predicted(path) -> list[tuple[str, str]]:
    import csv

    with open(path, newline="") as f:
        return [(row["id"], row["predicted"]) for row in csv.DictReader(f)]


def _cv_accuracy(x, y) -> tuple[float, float]:
    """(the best mean 5-fold accuracy of logistic regression over C_GRID, its C): the toolkit's logreg head."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from features.heads.registry import make_head

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = {c: float(cross_val_score(make_head("logreg", {"C": c}), x, y, cv=folds, n_jobs=-1).mean())
              for c in C_GRID}
    best = max(scores, key=scores.get)
    return scores[best], best


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnxruntime
    import tensorflow as tf

    from features.cache import read_cache
    from features.data import image_batches, load_folder
    from features.extraction.run import extract
    from features.heads.classify import classify_cache
    from features.models import create_backbone, embedding_function, onnx, openvino
    from features.models.registry import resolve_backbone
    from features.models.runtime import Choice, prepare

    lines = []

    def say(text=""):
        lines.append(text)
        print(text, flush=True)

    full = load_folder(args.data_dir)
    source = full if args.images <= 0 else load_folder(args.data_dir,
                                                       max_per_class=args.images // len(full.class_names))
    sample = load_folder(args.data_dir, max_per_class=max(1, args.memory_images // len(full.class_names)))
    backbone = resolve_backbone(args.backbone)
    cores, bf16 = onnx.cores(), openvino.native_bf16()
    import openvino as ov

    cpu = ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    say(f"machine: {cores} cores ({cpu}; native bf16: {'yes' if bf16 else 'no'}), TensorFlow {tf.__version__}, "
        f"ONNX Runtime {onnxruntime.__version__}, OpenVINO {openvino.version()}; {backbone.name} at "
        f"{backbone.image_size} px, batch {args.batch_size}; {len(source)} images ({Path(args.data_dir).name}), "
        f"{len(sample)} in memory")
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    runs = [("tf", "fp32"), ("onnx", "fp32"), ("openvino", "fp32")] + ([("openvino", "bf16")] if bf16 else [])
    with tempfile.TemporaryDirectory(prefix="tl-runtime-") as work:
        work = Path(work)
        caches = {}
        for runtime, precision in runs:  # each cache once (and the conversion, the first time)
            start = time.perf_counter()
            result = extract(source, backbone, out_dir=work / f"emb-{runtime}-{precision}", runtime=runtime,
                             precision=precision, batch_size=args.batch_size, progress=False)
            caches[(runtime, precision)] = result.path
            if result.conversion_seconds:
                say(f"conversion (once per backbone, size, weights, pooling, TTA): {result.conversion_seconds:.1f} s")
            say(f"set-up and first run, {runtime} at {precision}: {time.perf_counter() - start:.1f} s in all, "
                f"first batch after {result.first_batch_seconds:.2f} s")
        batches = [images.numpy()
                   for _, images in image_batches(sample, backbone.image_size, batch_size=args.batch_size)]
        networks = {"tf": embedding_function(create_backbone(backbone), backbone.image_size)}
        folder = work / "emb-onnx-fp32" / "onnx"
        for runtime, precision in runs[1:]:
            networks[f"{runtime} {precision}"] = prepare(backbone, Choice(runtime, precision), pooling="avg",
                                                         tta="none", seed=0, folder=folder, asked=runtime).embed
        converted = prepare(backbone, Choice("onnx"), pooling="avg", tta="none", seed=0, folder=folder, asked="onnx",
                            build=False).converted
        if bf16:
            networks["openvino bf16 2x1"] = openvino.OpenVinoEmbedder(converted, "bf16", streams=2)
        figures: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for name, network in networks.items():
                figures.setdefault(f"net {name}", []).append(_rate(network, batches))
            figures.setdefault("decode", []).append(_decode_rate(source, backbone.image_size, args.batch_size))
            for runtime, precision in runs + ([("openvino", "bf16 2x1")] if bf16 else []):
                openvino.STREAMS = 2 if precision.endswith("2x1") else 1
                result = extract(source, backbone, out_dir=work / f"emb-{runtime}-{precision[:4]}", runtime=runtime,
                                 precision=precision[:4], batch_size=args.batch_size, force=True, progress=False)
                figures.setdefault(f"extract {runtime} {precision}", []).append(result.steady_images_per_second)
            openvino.STREAMS = 1
            say(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figures.items()) + " img/s")
        median = {k: float(np.median(v)) for k, v in figures.items()}
        say()
        say(f"img/s, median of {args.rounds} rounds       network alone   extract.py   pipeline limit   extract/limit")
        decode = median["decode"]
        for runtime, precision in runs:
            net = median[f"net {runtime}" if runtime == "tf" else f"net {runtime} {precision}"]
            limit = 1 / (1 / net + 1 / decode)
            got = median[f"extract {runtime} {precision}"]
            say(f"{runtime + ' at ' + precision:36s} {net:13.1f} {got:12.1f} {limit:16.1f} {got / limit:15.3f}")
        if bf16:
            net, got = median["net openvino bf16 2x1"], median["extract openvino bf16 2x1"]
            limit = 1 / (1 / net + 1 / decode)
            say(f"{'openvino at bf16, 2 streams x 1 thread':36s} {net:13.1f} {got:12.1f} {limit:16.1f} "
                f"{got / limit:15.3f}")
        say(f"{'decode pipeline alone (tf.data)':36s} {decode:13.1f}")
        say()
        base = median["extract onnx fp32"]
        timed = runs + ([("openvino", "bf16 2x1")] if bf16 else [])
        best = max(timed, key=lambda rp: median[f"extract {rp[0]} {rp[1]}"])
        say(f"extract.py: openvino fp32 {median['extract openvino fp32'] / base:.2f}x --runtime onnx"
            + (f", openvino bf16 {median['extract openvino bf16'] / base:.2f}x (target >= 1.35x)" if bf16 else "")
            + f"; the fastest: {best[0]} at {best[1]}")
        if bf16:
            one, two = median["extract openvino bf16"], median["extract openvino bf16 2x1"]
            say(f"OpenVINO bf16 in extract.py: one stream of {cores} threads {one:.1f} img/s, two streams of one "
                f"thread {two:.1f}: {'one stream' if one >= two else 'two streams'} won")
        x = {rp: read_cache(path) for rp, path in caches.items()}
        ref = x[("onnx", "fp32")].embeddings
        for runtime in ("tf", "openvino"):
            say(f"fp32 caches: {runtime} against onnx, largest difference "
                f"{np.abs(x[(runtime, 'fp32')].embeddings - ref).max():.2e}")
        if bf16:
            b = x[("openvino", "bf16")].embeddings
            cosine = (ref * b).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(b, axis=1)
            say(f"bf16 cache against fp32: cosine min {cosine.min():.4f}, median {np.median(cosine):.5f}")
        if bf16 and not args.no_accuracy:
            say()
            say("accuracy of each precision: logreg, 5-fold cross-validation on each whole cache (the same folds), "
                f"the best C of {list(C_GRID)}; then C chosen on train and scored once on test")
            for folder_name in args.accuracy_dirs:
                data = load_folder(folder_name)
                found = {}
                for precision in precisions:
                    path = extract(data, backbone, out_dir=work / f"acc-{precision}", runtime="auto",
                                   precision=precision, batch_size=args.batch_size, progress=False).path
                    cache = read_cache(path)
                    found[precision] = _cv_accuracy(cache.embeddings, cache.labels)
                    row = classify_cache(cache, "logreg", n_jobs=-1, out_dir=work / f"runs-{precision}")
                    found[precision] += (row["accuracy"], Path(row["run_dir"]) / "predictions.csv")
                predicted = [_predicted(found[p][3]) for p in precisions]
                same, n = sum(a == b for a, b in zip(*predicted)), len(predicted[0])
                (f32, c32, t32, _), (b16, c16, t16, _) = found["fp32"], found["bf16"]
                say(f"{data.name}: 5-fold fp32 {f32:.4f} (C {c32}), bf16 {b16:.4f} (C {c16}): bf16 "
                    f"{100 * (b16 - f32):+.2f} points; test fp32 {t32:.4f}, bf16 {t16:.4f}, {same} of {n} test "
                    "rows alike")
    if not args.no_write:
        write_printed_section(Path(args.out), SECTION, "Extraction's runtime and precision: `benchmarks/runtime.py`",
                              ("The network alone on the same in-memory batches, the decode pipeline alone, and "
                               "extract.py's steady rate after set-up on TensorFlow, ONNX Runtime and OpenVINO at "
                               "fp32 and bf16, interleaved rounds in one run; then what bf16 costs in accuracy"),
                              lines)
        print(f"wrote the {SECTION} section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
