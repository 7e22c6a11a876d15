"""Exported models loaded for prediction, and the format of an export folder (this module owns it).

An export folder (``RUN_DIR/export/<format>[-<quantization>]/`` by default) holds::

    model.tflite | model.onnx | saved_model/   the model: uint8 RGB (N, size, size, 3) in 0-255 ->
                                               float32 class probabilities (N, classes)
    export.json     the input contract: export_format, format, quantization, model (the file's
                    name), sha256 (of the model's bytes; a SavedModel's files in order), classes,
                    image_size, input and output (name, dtype, shape, range), resize_method,
                    kind ("head" or "finetune"), head, source_run, signatures (SavedModel)
    labels.txt      the class names, one a line

:func:`load_exported` reads export.json back and checks the model against it before running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..io import read_json, tree_sha256
from .base import Predictor

FORMATS = ("saved_model", "tflite", "onnx")
MODEL_FILE = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
EXPORT_FORMAT = 1
RECORD = "export.json"


def uint8_images(images) -> np.ndarray:
    """The exported models' input: decoded and resized images rounded to uint8, as training saw them."""
    return np.clip(np.round(np.asarray(images)), 0, 255).astype(np.uint8)


@dataclass
class ExportedModel(Predictor):
    """An exported model loaded for prediction, with its contract (``export.json``)."""

    path: Path
    record: dict
    run: object  # a callable: uint8 batch -> probabilities

    @property
    def class_names(self) -> list[str]:
        return list(self.record["classes"])

    @property
    def image_size(self) -> int:
        return int(self.record["image_size"])

    def probabilities(self, paths: list[str], batch_size: int = 32, tta: str = "none"):
        """The model as exported (``tta`` "none": a flip, if any, is inside the exported graph)."""
        from ..data import image_batches

        if tta != "none":
            raise UsageError(f"{self.path}: an exported model runs as it was exported; {{tta}} takes run folders")
        rows, probas = [], []
        for index, images in image_batches(paths, self.image_size, batch_size=batch_size):
            rows.append(index.numpy())
            probas.append(self.run(uint8_images(images)))
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        proba = np.concatenate(probas) if probas else np.zeros((0, len(self.class_names)))
        return rows, proba


def find_export(path) -> Path | None:
    """The export folder of ``path`` (an exported model, or the folder holding one), else None."""
    path = Path(path)
    folder = path if path.is_dir() and (path / RECORD).is_file() else path.parent
    if (folder / RECORD).is_file() and (path == folder or path.name in MODEL_FILE.values()):
        return folder
    return None


def read_record(folder) -> dict:
    """An export folder's export.json, checked: its format, its model's file name (in the folder, never a
    path out of it), its image size, its classes and checksum are what export.py writes.

    Raises:
        UsageError: unreadable, or any field not one export.py writes (the message lists them).
    """
    from ..models.registry import MAX_IMAGE_SIZE

    path = Path(folder) / RECORD
    try:
        record = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict):
        raise UsageError(f"{path}: unreadable or not written by export.py; export the run again")
    problems = []
    if record.get("export_format") != EXPORT_FORMAT:
        problems.append(f"export_format {record.get('export_format')!r}, not {EXPORT_FORMAT}")
    fmt = record.get("format")
    if fmt not in FORMATS:
        problems.append(f"format {fmt!r} is none of {', '.join(FORMATS)}")
    elif record.get("model") != MODEL_FILE[fmt]:
        problems.append(f"model {record.get('model')!r}: a {fmt} export's model is {MODEL_FILE[fmt]}, beside it")
    size = record.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        problems.append(f"image_size {size!r} is not a size from 1 to {MAX_IMAGE_SIZE}")
    classes = record.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes)):
        problems.append("classes is not a list of two or more different names")
    sha = record.get("sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        problems.append("sha256 is not a checksum")
    if problems:
        raise UsageError(f"{path}: not a record export.py wrote ({'; '.join(problems)}); export the run again")
    return record


def load_exported(path) -> ExportedModel:
    """Load an exported model for prediction (``predict.py model.tflite photos/``).

    The record is checked (:func:`read_record`), the model's bytes against its checksum, and
    the model's own input size and output width against the record, before any image is
    decoded: a record that disagrees with its model would give wrong labels without a word.

    Raises:
        UsageError: no export.json beside it, a record or a model that does not match it, or
            a runtime that is not installed.
    """
    folder = find_export(path)
    if folder is None:
        raise UsageError(f"{path}: not an exported model (no export.json beside it); make one with export.py")
    record = read_record(folder)
    fmt, target = record["format"], folder / record["model"]
    if not target.exists() or tree_sha256(target) != record["sha256"]:
        raise UsageError(f"{target}: missing, or changed since it was exported (its sha256 differs from "
                         "export.json's)")
    run, (height, width, outputs) = {"tflite": _tflite_runner, "onnx": _onnx_runner,
                                     "saved_model": _saved_model_runner}[fmt](target)
    size, classes = record["image_size"], len(record["classes"])
    disagree = []
    if (height, width) != (size, size) and None not in (height, width):
        disagree.append(f"the model takes {height}x{width} images, export.json says {size}")
    if outputs not in (None, classes):
        disagree.append(f"the model gives {outputs} probabilities, export.json names {classes} classes")
    if disagree:
        raise UsageError(f"{folder}/{RECORD}: it does not match its model ({'; '.join(disagree)}); export the run "
                         "again")
    return ExportedModel(target, record, run)


def _dim(value) -> int | None:
    """A static dimension, or None (a symbolic or unknown one)."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0 else None


def _saved_model_runner(target: Path):
    import tensorflow as tf

    serve = tf.saved_model.load(str(target)).signatures["serving_default"]
    images = serve.structured_input_signature[1]["images"].shape
    outputs = serve.structured_outputs["probabilities"].shape

    def run(batch):
        return serve(images=tf.constant(batch))["probabilities"].numpy()

    return run, (_dim(images[1]), _dim(images[2]), _dim(outputs[-1]))


def _tflite_runner(target: Path):
    try:  # LiteRT, where the TFLite interpreter moved
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            Interpreter = tf.lite.Interpreter
    from contextlib import nullcontext

    from ..device import native_stderr_silenced, verbose

    interpreter = Interpreter(model_path=str(target), num_threads=os.cpu_count())
    runner = interpreter.get_signature_runner("serving_default")  # resizes its input to each batch
    first = [True]

    def run(batch):
        quiet = first.pop() if first else False  # the first call prints "Created ... XNNPACK delegate"
        with native_stderr_silenced() if quiet and not verbose() else nullcontext():
            return runner(images=np.ascontiguousarray(batch, np.uint8))["probabilities"]

    images = runner.get_input_details()["images"]["shape"]
    outputs = runner.get_output_details()["probabilities"]["shape"]
    return run, (_dim(images[1]), _dim(images[2]), _dim(outputs[-1]))


def _onnx_runner(target: Path):
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError("running an ONNX model needs onnxruntime: pip install -r requirements.txt") from None
    from ..models.onnx import ort_session

    session = ort_session(target)
    name = session.get_inputs()[0].name

    def run(batch):
        return session.run(None, {name: batch})[0]

    images, outputs = session.get_inputs()[0].shape, session.get_outputs()[0].shape
    return run, (_dim(images[1]), _dim(images[2]), _dim(outputs[-1]))
