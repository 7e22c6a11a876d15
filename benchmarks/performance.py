"""Benchmark: how close the toolkit runs to the machine's limit, and what each choice buys.

examples:
  python benchmarks/performance.py                          # every section, writes BENCHMARKS.md
  python benchmarks/performance.py --sections extraction memory --no-write
  python benchmarks/performance.py --images 500 --epochs 1  # a quicker, rougher run

Sections (each prints its figures as it goes; the table at the end marks every target):
  extraction   extract.py's pipeline on TensorFlow (--runtime tf) against the backbone's compute
               ceiling in TensorFlow (the same model on tensors already in memory, same batch
               size; ONNX Runtime against it: benchmarks/runtime.py), the Keras tutorial workflow
               (image_dataset_from_directory + model.predict) and a per-image loop (PIL +
               predict on one image); how much of the gap decoding is; DCT-scaled decoding
               of large JPEGs
  resize       the resize filter: antialiased only when shrinking over 2x (the toolkit's)
               against always antialiased: decoding speed and 5-fold cross-validated
               logistic-regression accuracy on the whole folder
  memory       peak resident memory and seconds per image of extract.py over 500 and 2,500
               images, each in a fresh process
  heads        logistic-regression fit time against the number of embeddings
  accuracy     time to accuracy: frozen features + logistic regression (extraction
               included) against finetune.py --unfreeze 0 with its default epochs
  prefix       finetune.py --cache-frozen against plain fine-tuning, same --unfreeze, --no-augment
  precision    mixed_bfloat16 (CPU) or mixed_float16 (GPU) against float32: extraction speed,
               change in embeddings and in test accuracy, fine-tuning speed and accuracy
Every ratio compares figures measured in this one run. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "flowers"
SECTIONS = ("extraction", "resize", "memory", "heads", "accuracy", "prefix", "precision")


def build_parser():
    p = argparse.ArgumentParser(prog="benchmarks/performance.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="image folder, one sub-folder per class")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, help="default: the backbone's own")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=0,
                   help="images for the extraction section (0: the whole folder)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the extraction measurements")
    p.add_argument("--loop-images", type=int, default=200, help="images for the per-image loop")
    p.add_argument("--dct-images", type=int, default=120,
                   help="photos enlarged to 2000x1500 for the DCT-scaling figure (0: skip it)")
    p.add_argument("--memory-images", type=int, nargs=2, default=(500, 2500), metavar=("SMALL", "LARGE"))
    p.add_argument("--unfreeze", default="20", help="--unfreeze of the prefix and precision sections")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the prefix and precision sections")
    p.add_argument("--accuracy-epochs", type=int, default=10,
                   help="epochs of finetune.py --unfreeze 0 (its default is 10)")
    p.add_argument("--out", default="BENCHMARKS.md", help="report to write")
    p.add_argument("--gpu-log", nargs="*", default=[], metavar="FILE",
                   help="outputs of benchmarks/gpu_precision.py on a GPU, copied into the report as printed")
    p.add_argument("--no-write", action="store_true", help="print only; leave the report as it is")
    p.add_argument("--json", action="store_true", help="also print every figure as one JSON line")
    return p


class Bench:
    """Shared state of one run: the data, the figures and the targets."""

    def __init__(self, args, work: Path):
        from features.data import load_folder
        from features.models import get_spec, resolve_image_size

        self.args, self.work = args, work
        self.spec = get_spec(args.backbone)
        self.size = resolve_image_size(self.spec.name, args.image_size)
        self.full = load_folder(args.data_dir)
        self.figures: dict[str, object] = {}
        self.targets: list[tuple[str, str, str, bool | None]] = []

    def subset(self, n: int):
        """A seeded, class-balanced sample of about ``n`` images (all for n <= 0)."""
        from features.data import load_folder

        if n <= 0 or n >= len(self.full):
            return self.full
        return load_folder(self.args.data_dir, max_per_class=max(1, n // len(self.full.class_names)))

    def record(self, key: str, value, text: str | None = None):
        self.figures[key] = value
        if text:
            print(f"  {text}", flush=True)

    def target(self, name: str, measured: str, needed: str, met: bool | None):
        self.targets.append((name, measured, needed, met))
        mark = {True: "met", False: "NOT met", None: "n/a"}[met]
        print(f"  target {name}: {measured} (needs {needed}) -> {mark}", flush=True)


def machine() -> dict:
    """Cores, CPU model and flags that matter here, GPUs, library versions."""
    import keras
    import sklearn
    import tensorflow as tf

    from features.device import library_versions

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"]
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cores": os.cpu_count(), "cpu": model, "cpu_flags": [f for f in wanted if f in flags],
            "gpu": gpus or "none",
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            **library_versions(), "scikit-learn": sklearn.__version__, "keras_backend": keras.backend.backend(),
            "date": datetime.date.today().isoformat()}


def _in_memory_batches(source, size, batch_size):
    """The toolkit's own decoding, done up front: batches of float32 tensors in memory."""
    from features.data import image_batches

    return [images for _, images in image_batches(source, size, batch_size=batch_size)]


def _throughput(fn, batches, repeat: int = 1) -> float:
    """Images per second of ``fn`` over in-memory batches, after one warm-up call."""
    fn(batches[0]).numpy()
    start = time.perf_counter()
    n = 0
    for _ in range(repeat):
        for b in batches:
            fn(b).numpy()
            n += len(b)
    return n / (time.perf_counter() - start)


def _link_folder(source, dest: Path) -> Path:
    """A folder of symbolic links to ``source``'s images, class by class (for Keras' loader)."""
    for rel, label in zip(source.ids, source.labels):
        link = dest / source.class_names[label] / rel.replace(os.sep, "__")
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.join(source.location, rel), link)
    return dest


def section_extraction(b: Bench):
    import keras
    import tensorflow as tf

    from features.data import decoded_images
    from features.extraction.run import extract
    from features.models import create_backbone, embedding_function

    a = b.args
    source = b.subset(a.images)
    n = len(source)
    print(f"extraction: {b.spec.name} at {b.size} px, batch {a.batch_size}, {n} images", flush=True)
    model = create_backbone(b.spec.name, image_size=b.size)
    batches = _in_memory_batches(source, b.size, a.batch_size)
    embed = embedding_function(model, b.size)
    keras_embed = embedding_function(model, b.size, freeze=False)
    folder = _link_folder(source, b.work / "links")
    ds = keras.utils.image_dataset_from_directory(folder, image_size=(b.size, b.size), batch_size=a.batch_size,
                                                  shuffle=False, verbose=False)
    ds = ds.map(lambda x, y: x).prefetch(tf.data.AUTOTUNE)
    runs = {"ceiling": [], "keras": [], "pipeline": [], "tutorial": []}
    for r in range(a.rounds):  # interleaved, so drifts of the machine's speed hit all alike
        runs["ceiling"].append(_throughput(embed, batches))
        runs["keras"].append(_throughput(keras_embed, batches))
        result = extract(source, b.spec.name, image_size=b.size, batch_size=a.batch_size,
                         out_dir=b.work / "emb", force=True, progress=False, runtime="tf")
        runs["pipeline"].append(result.images_per_second)
        runs.setdefault("steady", []).append(result.steady_images_per_second)
        runs.setdefault("setup", []).append(result.first_batch_seconds)
        start = time.perf_counter()
        tutorial_out = model.predict(ds, verbose=0)
        runs["tutorial"].append(len(tutorial_out) / (time.perf_counter() - start))
        print(f"  round {r + 1}: ceiling {runs['ceiling'][-1]:.1f}, Keras model in memory {runs['keras'][-1]:.1f}, "
              f"extract.py {runs['pipeline'][-1]:.1f}, tutorial {runs['tutorial'][-1]:.1f} img/s", flush=True)
    del batches
    ceiling, keras_mem, pipeline, tutorial = (float(np.median(runs[k]))
                                              for k in ("ceiling", "keras", "pipeline", "tutorial"))
    b.record("ceiling_img_s", ceiling, f"compute ceiling (the toolkit's frozen graph on tensors in memory), "
             f"median: {ceiling:.1f} img/s")
    b.record("keras_in_memory_img_s", keras_mem, f"the Keras model (weights as variables) on tensors in memory, "
             f"median: {keras_mem:.1f} img/s: freezing the graph gives {ceiling / keras_mem:.2f}x")
    steady, setup = float(np.median(runs["steady"])), float(np.median(runs["setup"]))
    b.record("pipeline_img_s", pipeline, f"extract.py pipeline, median: {pipeline:.1f} img/s end to end "
             f"(last: {result.n_images} images in {result.seconds:.1f} s); after its one-time set-up of "
             f"{setup:.1f} s (tracing, freezing and optimising the graph, the first batch): {steady:.1f} img/s")
    b.record("tutorial_img_s", tutorial, f"Keras tutorial workflow, median: {tutorial:.1f} img/s")

    start = time.perf_counter()
    for _ in decoded_images(source, b.size):
        pass
    decode = n / (time.perf_counter() - start)
    b.record("decode_img_s", decode, f"decoding alone (JPEG + resize, 2 threads): {decode:.0f} img/s")

    from PIL import Image

    paths = source.paths()[: a.loop_images]
    model.predict(np.zeros((1, b.size, b.size, 3), np.float32), verbose=0)
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            x = np.asarray(im.convert("RGB").resize((b.size, b.size), Image.BILINEAR), np.float32)
        model.predict(x[None], verbose=0)
    loop = len(paths) / (time.perf_counter() - start)
    b.record("loop_img_s", loop, f"per-image loop (PIL + predict): {loop:.1f} img/s over {len(paths)} images")

    serial = 1 / (1 / ceiling + 1 / decode)
    b.record("serial_bound_img_s", serial, f"decode and network one after the other would give {serial:.1f} img/s "
             f"({serial / ceiling:.3f} of the ceiling): decoding is {ceiling / decode:.1%} of the network's time")
    b.record("setup_s", setup)
    b.record("steady_img_s", steady)
    b.target("1a extraction / compute ceiling", f"{steady / ceiling:.3f} after set-up, {pipeline / ceiling:.3f} "
             "end to end", ">= 0.90", steady / ceiling >= 0.90)
    b.target("1b extraction / Keras tutorial", f"{pipeline / tutorial:.2f}x", ">= 1.05x", pipeline / tutorial >= 1.05)
    b.target("1c extraction / per-image loop", f"{pipeline / loop:.1f}x", ">= 7x", pipeline / loop >= 7)
    if a.dct_images:
        _dct(b, source, a.dct_images)


def _dct(b: Bench, source, count: int, side: int = 2000):
    """Decoding of large JPEGs with and without DCT scaling (the same photos, enlarged)."""
    from PIL import Image

    from features.data import decoded_images, load_folder, read_headers

    root = b.work / "large"
    step = max(1, len(source) // count)
    for rel, label in list(zip(source.ids, source.labels))[::step][:count]:
        dest = root / source.class_names[label] / f"{Path(rel).stem}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(os.path.join(source.location, rel)) as im:
            im.convert("RGB").resize((side, side * 3 // 4), Image.BICUBIC).save(dest, quality=90)
    large = load_folder(root)
    timings = {}
    for label, scaled in (("full", False), ("dct", True)):
        start = time.perf_counter()
        headers = read_headers(large.paths(), b.size, max_pixels=large.max_pixels, dct_scaling=scaled)
        images = np.concatenate([img.numpy()[None] for _, img in decoded_images(large, b.size, headers=headers)])
        timings[label] = (len(large) / (time.perf_counter() - start), images)
    speed = timings["dct"][0] / timings["full"][0]
    diff = float(np.abs(timings["dct"][1] - timings["full"][1]).mean())
    b.record("dct_speedup", speed, f"{len(large)} JPEGs of {side}x{side * 3 // 4}: DCT-scaled decoding "
             f"{timings['dct'][0]:.0f} img/s vs full {timings['full'][0]:.0f} img/s ({speed:.1f}x); "
             f"mean |pixel difference| after resizing {diff:.2f} of 255")
    b.record("dct_pixel_diff", diff)


def section_resize(b: Bench):
    import tensorflow as tf
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from features import data
    from features.data import pipelines
    from features.models import create_backbone, embedding_function

    print(f"resize: conditional antialiasing against always, {len(b.full)} images", flush=True)
    toolkit = data.decode_image

    def always_antialiased(raw, image_size, orientation=1, dct_shift=0, antialias=None):
        image = tf.io.decode_image(raw, channels=3, expand_animations=False, dtype=tf.uint8)
        image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
        return tf.clip_by_value(image, 0.0, 255.0)

    embed = embedding_function(create_backbone(b.spec.name, image_size=b.size), b.size)
    scores = {}
    try:
        for name, decode in (("toolkit", toolkit), ("always", always_antialiased)):
            pipelines.decode_image = decode  # the name the pipelines call
            start = time.perf_counter()
            for _ in data.decoded_images(b.full, b.size):
                pass
            rate = len(b.full) / (time.perf_counter() - start)
            x = np.concatenate([embed(images).numpy()
                                for _, images in data.image_batches(b.full, b.size, batch_size=32)])
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
            cv = cross_val_score(clf, x, b.full.labels, cv=StratifiedKFold(5, shuffle=True, random_state=0))
            scores[name] = (rate, cv.mean(), cv.std())
            label = "antialiased over 2x only" if name == "toolkit" else "always antialiased"
            b.record(f"resize_{name}", {"decode_img_s": rate, "cv_accuracy": cv.mean()},
                     f"{label:25s}: decoding {rate:.0f} img/s, 5-fold logreg accuracy {cv.mean():.4f} "
                     f"(+- {cv.std():.4f})")
    finally:
        pipelines.decode_image = toolkit
    gain = scores["toolkit"][0] / scores["always"][0]
    delta = (scores["toolkit"][1] - scores["always"][1]) * 100
    b.record("resize_gain", gain, f"decoding {gain:.2f}x faster, accuracy {delta:+.2f} points")


def section_memory(b: Bench):
    a = b.args
    print("memory: extract.py in a fresh process per size", flush=True)
    per_image, peaks = {}, {}
    for n in a.memory_images:
        per_class = max(1, n // len(b.full.class_names))
        # VmHWM, the peak of this process's own memory map: ru_maxrss would carry over the
        # peak of the (large) benchmark process that forked it.
        code = ("import json, re, sys, extract; code = extract.main(sys.argv[1:]); "
                "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
                "print(json.dumps({'maxrss_kb': int(hwm)})); sys.exit(code)")
        argv = [sys.executable, "-c", code, "--data-dir", a.data_dir, "--backbone", b.spec.name,
                "--image-size", str(b.size), "--batch-size", str(a.batch_size), "--max-per-class", str(per_class),
                "--out", str(b.work / f"mem{n}"), "--force", "-q", "--json"]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
        result, rss = json.loads(out[-2]), json.loads(out[-1])["maxrss_kb"] / 1024
        peaks[n], per_image[n] = rss, 1 / result["steady_images_per_second"]
        b.record(f"peak_rss_mb_{n}", rss, f"{result['images']} images: peak RSS {rss:.0f} MB; "
                 f"{1000 * result['seconds'] / result['images']:.2f} ms/image in all, of which set-up "
                 f"(tracing, graph optimisation, first batch) {result['first_batch_seconds']:.2f} s; "
                 f"after it {1000 * per_image[n]:.2f} ms/image")
    small, large = a.memory_images
    growth = peaks[large] / peaks[small] - 1
    b.target(f"2 peak memory {large} vs {small} images", f"{growth:+.1%}", "within 10%", abs(growth) <= 0.10)
    change = per_image[large] / per_image[small] - 1
    b.target(f"6a s/image after set-up {large} vs {small}", f"{change:+.1%}", "constant (within 10%)",
             abs(change) <= 0.10)


def section_heads(b: Bench):
    from features import cache as store
    from features.extraction.run import extract
    from features.heads import fit_head

    print("heads: logistic-regression fit time against the number of embeddings", flush=True)
    result = extract(b.full, b.spec.name, image_size=b.size, out_dir=b.work / "emb-full", progress=False)
    cache = store.read_cache(result.path)
    x, y = cache.split("train")
    rows = []
    for n in (250, 500, 1000, 2000, len(x)):
        if n > len(x):
            continue
        idx = np.random.default_rng(0).permutation(len(x))[:n]
        start = time.perf_counter()
        fit_head("logreg", x[idx], y[idx], None, y_val=None, n_jobs=-1)  # as classify.py does
        seconds = time.perf_counter() - start
        rows.append((n, seconds))
        b.record(f"logreg_fit_s_{n}", seconds, f"{n} embeddings: logreg fit (search included) {seconds:.2f} s")
    b.figures["heads_fit"] = rows


def _frozen_features(b: Bench):
    """Extraction (forced) + logistic regression on the whole folder: (accuracy, seconds)."""
    from features import cache as store
    from features.extraction.run import extract
    from features.heads.classify import classify_cache

    start = time.perf_counter()
    result = extract(b.full, b.spec.name, image_size=b.size, out_dir=b.work / "emb-acc", force=True, progress=False)
    r = classify_cache(store.read_cache(result.path), "logreg", out_dir=b.work / "runs", features=[str(result.path)])
    return r["accuracy"], time.perf_counter() - start, result.seconds


def _finetune(b: Bench, **kwargs):
    from features.train.config import TrainConfig
    from features.train.run import finetune

    config = TrainConfig(backbone=b.spec.name, image_size=b.size, batch_size=b.args.batch_size, **kwargs)
    start = time.perf_counter()
    r = finetune(b.full, config, out_dir=b.work / "runs", verbose=0)
    r["wall_seconds"] = time.perf_counter() - start
    return r


def section_accuracy(b: Bench):
    print(f"accuracy: frozen features + logreg vs finetune.py --unfreeze 0 on {len(b.full)} images", flush=True)
    acc_ff, seconds_ff, extract_s = _frozen_features(b)
    b.record("frozen_features", {"accuracy": acc_ff, "seconds": seconds_ff},
             f"frozen features + logreg: test accuracy {acc_ff:.4f} in {seconds_ff:.1f} s "
             f"(extraction {extract_s:.1f} s)")
    r = _finetune(b, unfreeze="0", epochs=b.args.accuracy_epochs)
    seconds_ig = r["train_seconds"]
    b.record("frozen_in_graph", {"accuracy": r["accuracy"], "seconds": seconds_ig, "epochs": r["epochs_run"]},
             f"finetune --unfreeze 0: test accuracy {r['accuracy']:.4f} in {seconds_ig:.1f} s "
             f"({r['epochs_run']} epochs, {r['seconds_per_epoch']:.1f} s/epoch)")
    gap = (r["accuracy"] - acc_ff) * 100
    b.target("3a frozen features accuracy vs frozen-in-graph", f"{-gap:+.2f} points", "within -1 point",
             gap <= 1.0)
    b.target("3b frozen features speed vs frozen-in-graph", f"{seconds_ig / seconds_ff:.1f}x sooner", ">= 10x",
             seconds_ig / seconds_ff >= 10)


def section_prefix(b: Bench):
    a = b.args
    print(f"prefix: finetune --unfreeze {a.unfreeze} --no-augment, plain vs --cache-frozen", flush=True)
    results = {}
    for cached in (False, True):
        r = _finetune(b, unfreeze=a.unfreeze, epochs=a.epochs, head_epochs=1, augment="none", cache_frozen=cached,
                      lr=1e-4, patience=a.epochs)
        results[cached] = r
        b.record(f"prefix_{'cached' if cached else 'plain'}", {k: r[k] for k in (
            "accuracy", "seconds_per_epoch", "train_seconds", "cache_seconds", "epochs_run")},
            f"{'--cache-frozen' if cached else 'plain        '}: {r['seconds_per_epoch']:.2f} s/epoch, "
            f"{r['train_seconds']:.1f} s in all (prefix pass {r['cache_seconds']:.1f} s), "
            f"test accuracy {r['accuracy']:.4f}")
    plain, cached = results[False], results[True]
    speed = plain["seconds_per_epoch"] / cached["seconds_per_epoch"]
    b.target("4a --cache-frozen seconds/epoch", f"{speed:.1f}x lower", ">= 3x", speed >= 3)
    gap = abs(cached["accuracy"] - plain["accuracy"]) * 100
    b.target("4b --cache-frozen test accuracy", f"{gap:.2f} points apart", "within 0.5 point", gap <= 0.5)
    b.figures["_plain_finetune"] = plain


def section_precision(b: Bench):
    import keras
    import tensorflow as tf

    from features.heads import fit_head
    from features.models import create_backbone, embedding_function
    from features.records.metrics import score

    a = b.args
    gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = "mixed_float16" if gpu else "mixed_bfloat16"
    source = b.subset(a.images or 1000)
    print(f"precision: {policy} vs float32 on {len(source)} images", flush=True)
    batches = _in_memory_batches(source, b.size, a.batch_size)
    speeds, embeddings = {}, {}
    for name in ("float32", policy):
        keras.mixed_precision.set_global_policy(name)
        try:
            model = create_backbone(b.spec.name, image_size=b.size)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        embed = embedding_function(model, b.size)
        speeds[name] = _throughput(embed, batches)
        embeddings[name] = np.concatenate([np.asarray(embed(x), np.float32) for x in batches])
    ratio = speeds[policy] / speeds["float32"]
    ref, low = embeddings["float32"], embeddings[policy]
    rel = float(np.linalg.norm(low - ref) / np.linalg.norm(ref))
    cos = float(np.mean(np.sum(low * ref, 1) / (np.linalg.norm(low, axis=1) * np.linalg.norm(ref, axis=1))))
    b.record("precision_extraction", {"policy": policy, "speedup": ratio, "relative_error": rel, "cosine": cos},
             f"extraction {policy}: {speeds[policy]:.1f} img/s vs float32 {speeds['float32']:.1f} ({ratio:.2f}x); "
             f"embeddings relative error {rel:.4f}, mean cosine {cos:.5f}")
    labels = source.labels
    from features.data import TEST, TRAIN

    train, test = source.splits == TRAIN, source.splits == TEST
    accs = {}
    for name, emb in embeddings.items():
        head = fit_head("logreg", emb[train], labels[train], None, y_val=None)
        accs[name] = score(labels[test], head.predict_proba(emb[test]), source.class_names)["accuracy"]
    b.record("precision_logreg", accs, f"logreg test accuracy on these embeddings: float32 {accs['float32']:.4f}, "
             f"{policy} {accs[policy]:.4f}")
    plain = b.figures.get("_plain_finetune") or _finetune(
        b, unfreeze=a.unfreeze, epochs=a.epochs, head_epochs=1, augment="none", lr=1e-4, patience=a.epochs)
    mixed = _finetune(b, unfreeze=a.unfreeze, epochs=a.epochs, head_epochs=1, augment="none", lr=1e-4,
                      patience=a.epochs, precision="mixed")
    tratio = plain["seconds_per_epoch"] / mixed["seconds_per_epoch"]
    b.record("precision_finetune", {"speedup": tratio, "float32": plain["accuracy"], policy: mixed["accuracy"]},
             f"fine-tuning {policy}: {mixed['seconds_per_epoch']:.1f} s/epoch vs float32 "
             f"{plain['seconds_per_epoch']:.1f} ({tratio:.2f}x); test accuracy {mixed['accuracy']:.4f} vs "
             f"{plain['accuracy']:.4f}")
    faster = ratio > 1.05 and tratio > 1.05
    as_accurate = abs(accs[policy] - accs["float32"]) <= 0.005 and mixed["accuracy"] >= plain["accuracy"] - 0.005
    b.target(f"5 {policy} by default", f"extraction {ratio:.2f}x, fine-tuning {tratio:.2f}x, accuracy "
             f"{(accs[policy] - accs['float32']) * 100:+.2f} / "
             f"{(mixed['accuracy'] - plain['accuracy']) * 100:+.2f} points",
             "faster and as accurate, else off", None)
    b.figures["precision_default_on"] = bool(faster and as_accurate)
    print(f"  => {policy} {'is' if faster and as_accurate else 'is not'} both faster and as accurate here", flush=True)


def _relative(path) -> str:
    """A path as the documents name it: relative to the repository, not this machine's absolute path."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def table(b: Bench, info: dict) -> str:
    width = max([34] + [len(t[1]) for t in b.targets])
    lines = [f"machine: {info['cores']} cores, {info['cpu']}, flags {' '.join(info['cpu_flags']) or '-'}, "
             f"GPU {info['gpu']}, {info['memory_gb']} GB",
             "versions: " + ", ".join(f"{k} {info[k]}" for k in ("python", "tensorflow", "keras", "numpy",
                                                                  "h5py", "scikit-learn")),
             f"backbone {b.spec.name} at {b.size} px, batch {b.args.batch_size}, data {_relative(b.args.data_dir)} "
             f"({len(b.full)} images), {info['date']}",
             "",
             f"| {'target':46s} | {'measured':{width}s} | {'needed':32s} | met |",
             f"|{'-' * 48}|{'-' * (width + 2)}|{'-' * 34}|-----|"]
    for name, measured, needed, met in b.targets:
        mark = {True: "yes", False: "NO", None: "-"}[met]
        lines.append(f"| {name:46s} | {measured:{width}s} | {needed:32s} | {mark:3s} |")
    return "\n".join(lines)


def write_report(path: Path, b: Bench, info: dict, text: str, log: list[str]) -> None:
    body = ["# Benchmarks", "",
            "Written by `python benchmarks/performance.py` (the figures below are its output; "
            "rerun it to refresh them). Ratios compare figures measured in one run on one machine; "
            "absolute times on shared machines are noise.", "", "```", text, "```", "",
            "## Every figure, as printed", "", "```", *log, "```", ""]
    for gpu_log in b.args.gpu_log:
        body += [f"## On a GPU: `benchmarks/gpu_precision.py` ({Path(gpu_log).name})", "",
                 "Printed on a GPU machine by `benchmarks/gpu_precision.py` (the lent one has JAX but no "
                 "TensorFlow: Keras 3 ran the toolkit's models on the JAX backend, images decoded with "
                 "Pillow).", "",
                 "```", Path(gpu_log).read_text().rstrip(), "```", ""]
    if path.exists():  # sections other benchmarks wrote (scaleout.py) stay
        body += [m.group(0) + "\n" for m in re.finditer(r"<!-- section:(\w+) -->.*?<!-- /section:\1 -->",
                                                        path.read_text(), re.S)]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text("\n".join(body))
    os.replace(tmp, path)


class _Tee:
    def __init__(self, stream):
        self.stream, self.lines = stream, []

    def write(self, s):
        self.stream.write(s)
        self.lines.append(s)

    def flush(self):
        self.stream.flush()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.basicConfig(level=logging.WARNING)
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        info = machine()
        with tempfile.TemporaryDirectory(prefix="tl-bench-") as work:
            b = Bench(args, Path(work))
            runners = {name: globals()[f"section_{name}"] for name in SECTIONS}
            for name in args.sections:
                start = time.perf_counter()
                runners[name](b)
                print(f"  ({name}: {time.perf_counter() - start:.0f} s)", flush=True)
        log = "".join(tee.lines).splitlines()
    finally:
        sys.stdout = tee.stream
    text = table(b, info)
    print("\n" + text)
    if args.json:
        print(json.dumps({"machine": info, "figures": {k: v for k, v in b.figures.items() if not k.startswith("_")},
                          "targets": b.targets}, default=float, sort_keys=True))
    if not args.no_write:
        write_report(Path(args.out), b, info, text, log)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
