"""Benchmark: every export format and quantization against the float Keras model, on real photos.

examples:
  python benchmarks/export.py                       # ../shared/datasets/flowers, makes both runs
  python benchmarks/export.py --head-run runs/<classify run> --finetune-run runs/<finetune run>

For a lite0 logistic-regression head (classify.py) and a lite0 fine-tuned model
(finetune.py) on the same photos, each export (SavedModel; TFLite none, dynamic, float16,
int8; ONNX) is made with export.py's library and measured on the head run's test images
(the split both runs share): file size, test accuracy, the largest probability difference
to the float Keras model on the same uint8 images, the median latency of one image, and
images/s at batch 32, the formats interleaved over --rounds. Writes a section of
BENCHMARKS.md. Without --head-run / --finetune-run it makes them: the cache and a logreg
head, and a fine-tune of the last 20 layers on cached frozen activations (short: 2 + 4 epochs).
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

SECTION = "export"
EXPORTS = [("saved_model", "none"), ("tflite", "none"), ("tflite", "dynamic"), ("tflite", "float16"),
           ("tflite", "int8"), ("onnx", "none")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets" / "flowers"))
    p.add_argument("--head-run", help="a classify.py run folder (linear head); default: made here")
    p.add_argument("--finetune-run", help="a finetune.py run folder; default: made here")
    p.add_argument("--work", default=str(ROOT / "runs" / "export-benchmark"), metavar="DIR",
                   help="where the runs, caches and exports it makes go")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds; medians reported")
    p.add_argument("--latency-images", type=int, default=20, help="single-image calls per latency figure")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def _script(name: str, *argv: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / name), *argv], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def _newest(folder: Path, suffix: str) -> Path:
    return max(folder.glob(f"*-{suffix}"), key=lambda p: p.stat().st_mtime)


def make_runs(args) -> tuple[Path, Path]:
    work = Path(args.work)
    head, tuned = args.head_run, args.finetune_run
    if not head:
        _script("extract.py", "--data-dir", args.data_dir, "--out", str(work / "embeddings"), "-q")
        _script("classify.py", "--embeddings-dir", str(work / "embeddings"), "--model", "logreg", "--out",
                str(work / "runs"), "-q")
        head = _newest(work / "runs", "logreg")
    if not tuned:
        _script("finetune.py", "--data-dir", args.data_dir, "--out", str(work / "runs"), "--no-augment",
                "--cache-frozen", "--head-epochs", "2", "--epochs", "4", "-q")
        tuned = _newest(work / "runs", "finetune")
    return Path(head), Path(tuned)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from features.device import quiet_tensorflow

    quiet_tensorflow()
    import numpy as np
    import tensorflow as tf

    from features.io import tree_bytes as model_bytes
    from features.serve.export import _uint8_batches, export, load_exportable
    from features.serve.exported import load_exported

    head_run, tuned_run = make_runs(args)
    with open(head_run / "predictions.csv", newline="") as f:
        test = [(row["id"], row["true"]) for row in csv.DictReader(f)]
    from features.cache import read_attrs

    cache = json.loads((head_run / "config.json").read_text())["features"][0]
    source = read_attrs(cache)["source"]
    paths = [os.path.join(source, i) for i, _ in test]
    names = load_exportable(head_run).class_names
    y = np.array([names.index(t) for _, t in test])
    lines = [f"exports: {len(paths)} test photos of {os.path.relpath(source, ROOT)}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')}; head run {head_run.name}, fine-tuned run {tuned_run.name}"]
    print(lines[0], flush=True)
    for kind, run in (("logreg head", head_run), ("fine-tuned", tuned_run)):
        model = load_exportable(run)
        images = np.concatenate(list(_uint8_batches(paths, model.image_size, 32)))
        keras_fn = tf.function(model.probabilities, input_signature=[
            tf.TensorSpec([None, model.image_size, model.image_size, 3], tf.uint8)])
        runners = {("keras", "float"): (lambda b, f=keras_fn: f(tf.constant(b)).numpy(), None)}
        with tempfile.TemporaryDirectory(prefix="exports-") as tmp:
            for fmt, quantize in EXPORTS:
                folder = export(run, fmt, quantize=quantize, out=Path(tmp) / f"{fmt}-{quantize}")
                exported = load_exported(folder / json.loads((folder / "export.json").read_text())["model"])
                runners[(fmt, quantize)] = (exported.run, model_bytes(exported.path))
            reference = np.concatenate([runners[("keras", "float")][0](images[s:s + 32])
                                        for s in range(0, len(images), 32)])
            results = {key: {"latency": [], "rate": []} for key in runners}
            for _ in range(args.rounds):
                for key, (run_fn, _) in runners.items():
                    run_fn(images[:1])
                    times = []
                    for i in range(args.latency_images):
                        start = time.perf_counter()
                        run_fn(images[i:i + 1])
                        times.append(time.perf_counter() - start)
                    results[key]["latency"].append(float(np.median(times)))
                    start = time.perf_counter()
                    proba = np.concatenate([run_fn(images[s:s + 32]) for s in range(0, len(images), 32)])
                    results[key]["rate"].append(len(images) / (time.perf_counter() - start))
                    results[key]["proba"] = proba
        lines.append(f"{kind} ({model.image_size} px):")
        lines.append(f"  {'format':22s} {'MB':>7s} {'test acc':>9s} {'max |dp|':>9s} {'ms/image b1':>12s} "
                     f"{'img/s b32':>10s}")
        accuracy = {}
        for key, (_, size) in runners.items():
            r = results[key]
            acc = float((r["proba"].argmax(1) == y).mean())
            accuracy[key] = acc
            diff = float(np.abs(r["proba"] - reference).max())
            label = f"{key[0]} {key[1]}" if key[0] != "keras" else "keras float (in TF)"
            lines.append(f"  {label:22s} {size / 1e6 if size else float('nan'):7.2f} {acc:9.4f} {diff:9.2e} "
                         f"{np.median(r['latency']) * 1e3:12.1f} {np.median(r['rate']):10.1f}")
        base = accuracy[("keras", "float")]
        sizes = {k: s for k, (_, s) in runners.items()}
        lat = {k: np.median(results[k]["latency"]) for k in runners}
        float_met = all(np.abs(results[k]["proba"] - reference).max() <= 1e-4 for k in runners if k[1] == "none")
        lines.append(f"  targets: float formats within 1e-4 of Keras: "
                     f"{'met' if float_met else 'missed'}; "
                     f"dynamic {100 * (accuracy[('tflite', 'dynamic')] - base):+.2f} and float16 "
                     f"{100 * (accuracy[('tflite', 'float16')] - base):+.2f} points (within 0.5); int8 "
                     f"{100 * (accuracy[('tflite', 'int8')] - base):+.2f} points (within 1.5), "
                     f"{sizes[('tflite', 'float16')] / sizes[('tflite', 'int8')]:.2f}x smaller than float16 "
                     f"(at least 2x), batch-1 latency {lat[('keras', 'float')] / lat[('tflite', 'int8')]:.2f}x "
                     f"the Keras model's speed (above 1x)")
        print("\n".join(lines[-(len(runners) + 3):]), flush=True)
    if not args.no_write:
        write_printed_section(Path(args.out), SECTION, "Exports: `benchmarks/export.py`",
                              ("Each export format against the float Keras model on the same test photos and the same "
                               "uint8 inputs, as printed"), lines)
        print(f"wrote the {SECTION} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
