"""Classify photos with a run folder of classify.py (a head and its backbone) or finetune.py.

examples:
  python predict.py runs/<run>/ photo.jpg more_photos/ --top-k 3
  python predict.py runs/<run>/ more_photos/ --csv predictions.csv
  python predict.py runs/<run>/export/tflite-int8/model.tflite photos/   # an exported model
  python predict.py runs/<finetune run>/ photos/ --tta flip            # each photo and its mirror
  python predict.py runs/<run>/ photos/ --ensemble runs/<run2>/ runs/<run3>/   # probabilities averaged
  python predict.py runs/<run>/ photos/ --explain heatmaps/          # where the network looked, a PNG a photo

Folders are searched for images (jpg, jpeg, png, bmp, gif) as extract.py does; files that
cannot be decoded are listed with the reason, and the others are still classified.
A run folder whose model and record disagree (classes, image size, embedding width,
weights file) is refused with the reason.
"""

from __future__ import annotations

import argparse
import sys

from features.cli import common
from features.cli.common import HelpFormatter, add_common_flags, print_json, program


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=program("predict.py"), description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR_OR_EXPORT",
                   help="a run folder holding head.skops (classify.py) or model.keras (finetune.py), or a model "
                        "export.py wrote (model.tflite, model.onnx, a SavedModel folder) with its export.json")
    p.add_argument("inputs", nargs="+", help="image files and folders")
    p.add_argument("--top-k", type=int, default=3, help="classes to print per image")
    p.add_argument("--csv", metavar="PATH", help="write every image's probabilities to this CSV instead of printing")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tta", default="none", choices=("none", "flip"),
                   help="flip: a fine-tuned model's probabilities of each photo and its mirror, averaged (a head "
                        "trained on an extract.py --tta flip cache does this itself)")
    p.add_argument("--ensemble", nargs="+", metavar="RUN_DIR", default=[],
                   help="more run folders (classify.py or finetune.py, same classes): the probabilities of all "
                        "of them are averaged")
    p.add_argument("--runtime", default="auto", choices=("auto", "tf", "onnx", "openvino"),
                   help="what runs a classify.py run's backbone, at the precision of the cache it was trained on: "
                        "ONNX Runtime (onnx) or OpenVINO (openvino; the network converted once into the onnx/ "
                        "folder beside the run's caches, as extract.py does), TensorFlow (tf), or auto: as "
                        "extract.py's --runtime auto")
    p.add_argument("--explain", metavar="DIR",
                   help="draw where the network looked for each photo's predicted class into DIR, one PNG a photo "
                        "(CAM for a linear head on average-pooled embeddings, exact; Grad-CAM for fine-tuned runs, "
                        "the svm head and max pooling); each printed row names its PNG")
    add_common_flags(p)
    return p


def _predict_from_flags(args) -> None:
    from features.errors import UsageError
    from features.outputs import check_output_folder
    from features.serve.exported import find_export
    from features.serve.predict import predict, write_csv

    if args.top_k < 1:
        raise UsageError(f"{{top_k}} {args.top_k}: must be at least 1")
    if args.explain and (args.ensemble or find_export(args.run_dir)):
        raise UsageError(f"{{explain}} {args.explain}: heatmaps are drawn for one run folder of classify.py or "
                         "finetune.py, not an ensemble or an exported model; give the run folder itself")
    if args.explain:
        check_output_folder(args.explain, param="explain")  # before any photo is classified
    found = predict(args.run_dir, args.inputs, ensemble=args.ensemble, tta=args.tta, runtime=args.runtime,
                    batch_size=args.batch_size)
    heatmaps, how = None, ""
    if args.explain:
        from features.serve.explain import describe, explainer, write_heatmaps

        explaining = explainer(found.predictor)
        got = explaining.explain(found.paths, _predicted(found), batch_size=args.batch_size, tta=args.tta)
        shown = dict(zip(found.rows.tolist(), found.probabilities))  # what is printed, at the run's precision
        heatmaps = write_heatmaps(args.explain, found.paths, got, found.class_names, shown=shown)
        how = describe(explaining)
    best = found.top_k(args.top_k)
    if args.csv:
        write_csv(args.csv, found.paths, rows=found.rows, proba=found.probabilities, class_names=found.class_names,
                  failed=found.failed, heatmaps=heatmaps)
        print(f"wrote {args.csv}: {len(found.rows)} images classified, {len(found.failed)} unreadable")
    else:
        for row, (path, ranked) in zip(found.rows.tolist(), best):
            heat = f"  heatmap {heatmaps[row]}" if heatmaps and row in heatmaps else ""
            print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked) + heat)
    if heatmaps is not None:
        print(f"heatmaps of the predicted classes ({how}): {len(heatmaps)} in {args.explain}")
    for skipped in found.failed:
        print(f"unreadable {skipped.id}: {skipped.reason}")
    if args.json:
        print_json({"predictions": [{"path": path, "top": [[n, p] for n, p in ranked],
                                     **({"heatmap": str(heatmaps.get(row, ""))} if heatmaps is not None else {})}
                                    for row, (path, ranked) in zip(found.rows.tolist(), best)],
                    "unreadable": [{"path": s.id, "kind": s.kind, "reason": s.reason} for s in found.failed]})


def _predicted(found):
    """Each path's predicted class (-1 where it was not read), so the heatmaps are of the printed classes."""
    import numpy as np

    classes = np.full(len(found.paths), -1, np.int64)
    classes[found.rows] = found.probabilities.argmax(1)
    return classes


def main(argv=None) -> int:
    return common.main(build_parser, _predict_from_flags, argv)


if __name__ == "__main__":
    sys.exit(main())
