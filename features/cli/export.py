"""Export a run folder's model to where models run: SavedModel, TFLite (quantized) or ONNX.

examples:
  python export.py runs/<a classify.py run> --format tflite --quantize int8
  python export.py runs/<a finetune.py run> --format saved_model
  python export.py runs/<run> --format onnx --out exports/flowers-onnx
  python predict.py runs/<run>/export/tflite-int8/model.tflite photos/   # check the export

A classify.py run exports when its head is linear (logreg, linear_svm, sgd): the backbone,
its pooling, the scaler and the head folded into one model. Every export takes uint8 RGB
images at the model's size and gives class probabilities; export.json beside it says so
(classes, size, decoding, format, quantization, source run, sha256), with labels.txt.
int8 is full integer quantization, calibrated on training images of the run.
"""

from __future__ import annotations

import argparse
import sys

from features.cli import common
from features.cli.common import HelpFormatter, add_common_flags, print_json, program


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program("export.py"), description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("run_dir", help="a run folder of classify.py (linear head) or finetune.py")
    p.add_argument("--format", default="tflite", choices=("saved_model", "tflite", "onnx"))
    p.add_argument("--quantize", default="none", choices=("none", "dynamic", "float16", "int8"),
                   help="tflite only: dynamic-range, float16 weights, or full int8")
    p.add_argument("--out", metavar="DIR", help="export folder (default: RUN_DIR/export/<format>[-<quantize>])")
    p.add_argument("--force", action="store_true", help="replace an export already there")
    add_common_flags(p)
    return p


def _export_from_flags(args) -> None:
    from features.io import read_json, tree_bytes
    from features.serve.export import check_settings, export
    from features.serve.exported import RECORD

    check_settings(args.format, args.quantize)  # flags first, then work
    folder = export(args.run_dir, args.format, quantize=args.quantize, out=args.out, force=args.force)
    record = read_json(folder / RECORD)
    size = tree_bytes(folder / record["model"])
    print(f"exported {record['kind']} {args.format} ({args.quantize}): {folder / record['model']}, "
          f"{size / 1e6:.1f} MB\n  takes uint8 images {record['image_size']}x{record['image_size']}, gives "
          f"{len(record['classes'])} class probabilities; export.json and labels.txt beside it")
    if args.json:
        print_json({**record, "path": str(folder / record["model"]), "bytes": size})


def main(argv=None) -> int:
    return common.main(build_parser, _export_from_flags, argv)


if __name__ == "__main__":
    sys.exit(main())
