"""Benchmark: what each backbone costs to run on this machine, beside what it reached on ImageNet.

examples:
  python benchmarks/backbones.py                                   # every registry entry, and the hub encoders
  python benchmarks/backbones.py --backbones efficientnet_lite0 convnexttiny --no-write

For every registry entry at its default size, and for the KerasHub encoders at 224 px built
from their published architectures: the frozen graph's images per second after set-up (the
graph extract.py runs, on the same in-memory batches of random pixels; the weights are random
too, since speed does not depend on their values), the parameters and the embedding's width.
The last column is a published ImageNet figure (top-1 of the ImageNet classifier, or a linear
probe's accuracy on frozen features where the authors report that), with its source: quoted,
not measured here. Writes its section of BENCHMARKS.md.
A benchmark, not a test: compare figures from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sections import write_printed_section  # benchmarks/sections.py

from features.cli.common import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
SECTION = "backbones"

# The published figures, with where they are printed (ImageNet-1k validation, single 224-600 px crop).
SOURCES = {
    "keras": "keras.io/api/applications, the table of available models (top-1)",
    "mnv3": "Keras' MobileNetV3 docstring, from Howard et al. 2019 (top-1)",
    "convnext": "Liu et al. 2022, ConvNeXt (top-1; T and S trained on ImageNet-1k, B, L, XL pre-trained on 22k, "
                "as the Keras weights)",
    "lite": "github.com/tensorflow/tpu, models/official/efficientnet/lite/README.md (top-1)",
    "dinov2": "Oquab et al. 2023, DINOv2, Table 4 (linear probe on frozen features)",
    "clip": "Radford et al. 2021, CLIP, Table 10 (linear probe on frozen features)",
}
PUBLISHED = {
    "xception": (79.0, "keras"), "vgg16": (71.3, "keras"), "vgg19": (71.3, "keras"), "resnet50": (74.9, "keras"),
    "resnet50v2": (76.0, "keras"), "resnet101": (76.4, "keras"), "resnet101v2": (77.2, "keras"),
    "resnet152": (76.6, "keras"), "resnet152v2": (78.0, "keras"), "inceptionv3": (77.9, "keras"),
    "inceptionresnetv2": (80.3, "keras"), "mobilenet": (70.4, "keras"), "mobilenetv2": (71.3, "keras"),
    "densenet121": (75.0, "keras"), "densenet169": (76.2, "keras"), "densenet201": (77.3, "keras"),
    "nasnetmobile": (74.4, "keras"), "nasnetlarge": (82.5, "keras"),
    "efficientnetb0": (77.1, "keras"), "efficientnetb1": (79.1, "keras"), "efficientnetb2": (80.1, "keras"),
    "efficientnetb3": (81.6, "keras"), "efficientnetb4": (82.9, "keras"), "efficientnetb5": (83.6, "keras"),
    "efficientnetb6": (84.0, "keras"), "efficientnetb7": (84.3, "keras"),
    "efficientnetv2b0": (78.7, "keras"), "efficientnetv2b1": (79.8, "keras"), "efficientnetv2b2": (80.5, "keras"),
    "efficientnetv2b3": (82.0, "keras"), "efficientnetv2s": (83.9, "keras"), "efficientnetv2m": (85.3, "keras"),
    "efficientnetv2l": (85.7, "keras"),
    "convnexttiny": (82.1, "convnext"), "convnextsmall": (83.1, "convnext"), "convnextbase": (85.8, "convnext"),
    "convnextlarge": (86.6, "convnext"), "convnextxlarge": (87.0, "convnext"),
    "mobilenetv3small": (68.1, "mnv3"), "mobilenetv3large": (75.6, "mnv3"),
    "efficientnet_lite0": (75.1, "lite"), "efficientnet_lite1": (76.7, "lite"), "efficientnet_lite2": (77.6, "lite"),
    "dinov2 ViT-S/14": (81.1, "dinov2"), "dinov2 ViT-B/14": (84.5, "dinov2"), "clip ViT-B/16": (80.2, "clip"),
}


def hub_encoders() -> dict:
    """The KerasHub families at their published ViT sizes (random weights, 224 px): name -> builder."""
    import keras_hub

    shape = (224, 224, 3)

    def dinov2(hidden, heads):
        return lambda: keras_hub.models.DINOV2Backbone(
            patch_size=14, num_layers=12, hidden_dim=hidden, num_heads=heads, intermediate_dim=4 * hidden,
            layer_scale_init_value=1.0, image_shape=shape, position_embedding_shape=(518, 518, 3))

    return {
        "dinov2 ViT-S/14": (dinov2(384, 6), keras_hub.layers.DINOV2ImageConverter),
        "dinov2 ViT-B/14": (dinov2(768, 12), keras_hub.layers.DINOV2ImageConverter),
        "vit ViT-B/16": (lambda: keras_hub.models.ViTBackbone(
            image_shape=shape, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072),
            keras_hub.layers.ViTImageConverter),
        "clip ViT-B/16": (lambda: keras_hub.models.CLIPVisionEncoder(
            patch_size=16, hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072,
            intermediate_activation="quick_gelu", image_shape=shape), keras_hub.layers.CLIPImageConverter),
        "siglip ViT-B/16": (lambda: keras_hub.models.SigLIPVisionEncoder(
            patch_size=16, hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072, image_shape=shape),
            keras_hub.layers.SigLIPImageConverter),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/backbones.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--backbones", nargs="+", help="registry names and hub rows (default: all)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch")
    p.add_argument("--seconds", type=float, default=4.0, help="time each backbone at least this long (and 2 batches)")
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="the file whose section this writes")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--one", metavar="NAME", help=argparse.SUPPRESS)  # one backbone, in a child process
    return p


def _rate(model, size: int, batch: int, seconds: float) -> float:
    """Images per second of the frozen graph after its first (tracing) batch."""
    import numpy as np

    from features.models.build import embedding_function

    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype("float32")
    embed = embedding_function(model, size)
    np.asarray(embed(images))  # set-up: trace and first run
    done, start = 0, time.perf_counter()
    while done < 2 * batch or time.perf_counter() - start < seconds:
        np.asarray(embed(images))
        done += batch
    return done / (time.perf_counter() - start)


def _hub_preset(name: str, build, converter_class, folder: Path) -> str:
    """The encoder and its image converter saved as a preset folder: ``hub:FOLDER``, as a user brings one."""
    encoder = build()
    path = folder / name.replace(" ", "-").replace("/", "-")
    path.mkdir()
    encoder.save_to_preset(str(path))
    converter_class(image_size=encoder.image_shape[:2], scale=1 / 255).save_to_preset(str(path))
    return f"hub:{path}"


def measure(name: str, batch_size: int, seconds: float) -> dict:
    """One backbone's figures, in this process (``--one``): size, width, parameters, images per second."""
    from features.models import create_backbone, get_spec

    try:
        hub = hub_encoders()
    except ModuleNotFoundError:
        hub = {}
    with tempfile.TemporaryDirectory(prefix="backbones-") as presets:
        backbone = _hub_preset(name, *hub[name], Path(presets)) if name in hub else name
        size = get_spec(backbone).default_size
        model = create_backbone(backbone, weights="none", image_size=size)
        return {"size": size, "width": int(model.output.shape[-1]), "params": model.count_params(),
                "rate": _rate(model, size, batch_size, seconds)}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.one:
        print(json.dumps(measure(args.one, args.batch_size, args.seconds)))
        return 0
    import keras
    import tensorflow as tf

    from features.models.registry import REGISTRY

    try:
        hub = hub_encoders()
    except ModuleNotFoundError:
        hub = {}
    names = args.backbones or [*REGISTRY, *hub]
    unknown = [n for n in names if n not in REGISTRY and n not in hub]
    if unknown:
        print(f"benchmarks/backbones.py: unknown backbones {unknown}; registry names or {list(hub)}")
        return 2
    lines = [f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, TensorFlow "
             f"{tf.__version__}, Keras {keras.__version__}; frozen graph, batches of {args.batch_size}, random "
             "weights and pixels, each backbone in a fresh process", "",
             f"{'backbone':20s} {'size':>5s} {'width':>6s} {'params':>8s} {'img/s':>7s}  {'published':>9s}  source"]
    print("\n".join(lines), flush=True)
    for name in names:  # a fresh process each: the largest networks need the memory the others would keep
        child = subprocess.run([sys.executable, __file__, "--one", name, "--batch-size", str(args.batch_size),
                                "--seconds", str(args.seconds)], capture_output=True, text=True)
        top1, source = PUBLISHED.get(name, (None, ""))
        published = f"{f'{top1:.1f}%' if top1 else '-':>9s}  {source}"
        if child.returncode:
            lines_out = [x for x in child.stderr.strip().splitlines() if x[:1] not in "IWE" or "Error" in x]
            why = f"killed by signal {-child.returncode} (on Linux, the out-of-memory killer, most likely)" \
                if child.returncode < 0 else (lines_out or [""])[-1]
            line = f"{name:20s} failed: {why}"
        else:
            r = json.loads(child.stdout.strip().splitlines()[-1])
            line = (f"{name:20s} {r['size']:5d} {r['width']:6d} {r['params'] / 1e6:7.1f}M {r['rate']:7.1f}  "
                    f"{published}")
        lines.append(line)
        print(line, flush=True)
    lines += ["", "published figures, quoted (not measured here):"]
    lines += [f"  {key}: {text}" for key, text in SOURCES.items()]
    print("\n".join(lines[-len(SOURCES) - 1:]))
    if not args.no_write:
        write_printed_section(Path(args.out), SECTION, "What each backbone costs: `benchmarks/backbones.py`",
                              ("Every registry entry at its default size and the KerasHub encoders at 224 px: the "
                               "frozen graph's rate after set-up on these cores, parameters, embedding width, and "
                               "a published ImageNet figure with its source"), lines)
        print(f"wrote the {SECTION} section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
