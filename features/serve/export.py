"""Export a run folder to where models run: a TensorFlow SavedModel, TFLite or ONNX.

One exported model maps uint8 RGB images at the model's size, (N, size, size, 3) in
0-255, to class probabilities (N, classes):

* a ``finetune.py`` run: its ``model.keras`` (one sigmoid output becomes two columns);
* a ``classify.py`` run with a linear head: the backbone with its input scaling, the
  pooling, then the scaler and the head folded into one linear map
  (:func:`features.heads.fold_head`), calibration included. Heads with no single-graph
  form (the RBF SVM, k nearest neighbours) are refused.

Beside the model go ``export.json`` (the input contract: classes, size, dtype and range,
how images are decoded and resized, format, quantization, source run, sha256 of the model)
and ``labels.txt``. A SavedModel has a second signature, ``serving_bytes``, taking encoded
JPEG/PNG bytes and decoding and resizing them with the toolkit's own decode function.
TFLite ``int8`` is full integer quantization calibrated on training images of the run
(never its test images). Each export is written into a temporary folder and renamed.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import validate
from ..data.photo_ids import photo_path
from ..device import quiet_converters, verbose
from ..errors import DiskFullError, UsageError, is_disk_full
from ..io import Busy, file_lock, temporary_name, tree_sha256, write_json, write_text
from ..outputs import check_output_folder
from ..records.runs import RunFiles
from .exported import EXPORT_FORMAT, FORMATS, MODEL_FILE, RECORD, read_record, uint8_images

log = logging.getLogger(__name__)

QUANTIZATIONS = {"saved_model": ("none",), "tflite": ("none", "dynamic", "float16", "int8"), "onnx": ("none",)}
CALIBRATION_IMAGES = 200


def check_settings(fmt: str, quantize: str = "none") -> None:
    """Raises UsageError for a format or a quantization the format does not have."""
    if fmt not in FORMATS:
        raise UsageError(f"{{format}} {fmt}: choose one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS[fmt]:
        raise UsageError(f"{{quantize}} {quantize}: {fmt} takes {' or '.join(QUANTIZATIONS[fmt])}"
                         + ("; quantized models are exported as tflite" if fmt != "tflite" else ""))


@dataclass(kw_only=True)
class Exportable:
    """What a run folder exports: a probability function of uint8 images, and its record."""

    run_dir: Path
    kind: str  # "head" or "finetune"
    class_names: list[str]
    image_size: int
    keras_model: object  # the backbone (head runs) or the whole fine-tuned model
    linear: object = None  # features.heads.Linear, head runs only
    head: str | None = None

    def probabilities(self, images):
        """TensorFlow ops: uint8 (N, size, size, 3) -> float32 (N, classes)."""
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        out = tf.cast(self.keras_model(x, training=False), tf.float32)
        if self.kind == "finetune":
            return tf.concat([1.0 - out, out], axis=-1) if out.shape[-1] == 1 else out
        return linear_probabilities(self.linear, out)


def linear_probabilities(linear, embeddings):
    """TensorFlow ops of :meth:`features.heads.Linear.predict_proba`: what the exports compute."""
    import tensorflow as tf

    kernel = tf.constant(linear.kernel, tf.float32)
    bias = tf.constant(linear.bias, tf.float32)
    z = tf.einsum("nd,mdk->mnk", tf.cast(embeddings, tf.float32), kernel) + bias[:, None, :]
    if linear.activation == "softmax":
        p = tf.nn.softmax(z, axis=-1)
    else:
        s = tf.sigmoid(z)
        p = tf.concat([1.0 - s, s], axis=-1) if s.shape[-1] == 1 else s / tf.reduce_sum(s, -1, keepdims=True)
    return tf.reduce_mean(p, axis=0)


def load_exportable(run_dir) -> Exportable:
    """The model of a run folder, ready to export.

    Raises:
        UsageError: not a run folder, a head with no single-graph form, or a head on
            several backbones.
    """
    from ..heads.fitted import fold_head
    from .predict import load_predictor

    predictor = load_predictor(run_dir)
    if predictor.kind == "finetune":
        return Exportable(run_dir=Path(run_dir), kind="finetune", class_names=predictor.class_names,
                          image_size=predictor.image_size, keras_model=predictor.model)
    if len(predictor.backbones) != 1:
        raise UsageError(f"{run_dir}: the head reads the embeddings of {len(predictor.backbones)} backbones; "
                         "export a head trained on one")
    from ..heads.files import load_run_head

    name = load_run_head(RunFiles(run_dir))["head"]
    linear = fold_head(predictor.model, name)
    _, size, _, model = predictor.backbones[0]  # loaded on TensorFlow: the Keras model is the graph to export
    return Exportable(run_dir=Path(run_dir), kind="head", class_names=predictor.class_names, image_size=size,
                      keras_model=model, linear=linear, head=name)


def calibration_paths(run_dir, n: int = CALIBRATION_IMAGES, seed: int = 0) -> list[str]:
    """Up to ``n`` training images of the run (seeded sample), never its test images.

    A head run: the train rows listed in its cache. A fine-tuning run: the images of its
    source folder less the test images named in its predictions.csv.

    Raises:
        UsageError: the images cannot be found (the cache or the folder moved).
    """
    from ..data.splits import TRAIN

    files = RunFiles(run_dir)
    config = files.read_config()
    rng = np.random.default_rng(seed)
    if files.kind == "head":
        from ..cache import CacheRows, read_attrs

        features = config.get("features") or []
        try:
            source = read_attrs(features[0])["source"]
            with CacheRows(features[:1], verify_checksum=False) as rows:
                train = np.flatnonzero(rows.splits == TRAIN)
                pick = np.sort(rng.choice(train, min(n, len(train)), replace=False))
                paths = [str(photo_path(source, rows.ids(int(i), int(i) + 1)[0])) for i in pick]
        except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
            raise UsageError(f"{run_dir}: cannot list the training images of its cache ({exc}); int8 "
                             "quantization calibrates on them: keep the cache and its photos") from None
    else:
        from ..data import images_under

        source = config.get("source")
        if not source or not Path(source).is_dir():
            raise UsageError(f"{run_dir}: its photos ({source}) are not there; int8 quantization calibrates on "
                             "its training images")
        try:
            test = files.test_ids()
        except (OSError, KeyError):
            raise UsageError(f"{run_dir}: its predictions.csv, which names its test images, is missing or "
                             "unreadable; int8 quantization calibrates on the other images") from None
        candidates = [p for p in images_under(Path(source)) if os.path.relpath(p, source) not in test]
        pick = rng.choice(len(candidates), min(n, len(candidates)), replace=False)
        paths = [candidates[i] for i in sorted(pick)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UsageError(f"{missing[0]}: a training image of the run is missing; int8 quantization calibrates "
                         "on them")
    return paths


def _uint8_batches(paths, size: int, batch_size: int = 16):
    """The exported models' input: decoded and resized as training did, rounded to uint8."""
    from ..data import image_batches

    for _, images in image_batches(paths, size, batch_size=batch_size):
        yield uint8_images(images)


def _saved_model(model: Exportable, folder: Path) -> None:
    import keras
    import tensorflow as tf

    from ..data import decode_image

    size = model.image_size
    archive = keras.export.ExportArchive()
    archive.track(model.keras_model)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    def serve(images):
        return {"probabilities": model.probabilities(images)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded")])
    def serve_bytes(encoded):
        def one(data):
            return tf.cast(tf.clip_by_value(tf.round(decode_image(data, size)), 0, 255), tf.uint8)

        images = tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return {"probabilities": model.probabilities(images)}

    archive.add_endpoint("serving_default", serve)
    archive.add_endpoint("serving_bytes", serve_bytes)
    archive.write_out(str(folder / MODEL_FILE["saved_model"]), verbose=False)


def _tflite(model: Exportable, folder: Path, quantize: str) -> None:
    import tensorflow as tf

    staging = folder / "staging"
    _saved_model(model, staging)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(staging / MODEL_FILE["saved_model"]),
                                                         signature_keys=["serving_default"])
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        paths = calibration_paths(model.run_dir)

        def representative():
            for batch in _uint8_batches(paths, model.image_size, 1):
                yield {"images": batch}

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    from contextlib import nullcontext

    from ..device import native_stderr_silenced

    with nullcontext() if verbose() else native_stderr_silenced():  # the converter's C++ lines
        try:
            flatbuffer = converter.convert()
        except Exception as exc:  # the converter's own error types: this network has no TFLite form
            if is_disk_full(exc):
                raise
            raise ConverterRefused("tflite", (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]) \
                from None
    (folder / MODEL_FILE["tflite"]).write_bytes(flatbuffer)
    shutil.rmtree(staging)


def _onnx(model: Exportable, folder: Path) -> None:
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError:
        raise UsageError("ONNX export needs tf2onnx and onnx: pip install -r requirements.txt") from None
    size = model.image_size

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    def serve(images):
        return {"probabilities": model.probabilities(images)}

    from ..models.onnx import OPSET, ort_session

    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET,
                                  output_path=str(folder / MODEL_FILE["onnx"]))
    try:  # tf2onnx writes ops it could not convert as they are: the runtime is the judge
        import onnxruntime  # noqa: F401

        ort_session(folder / MODEL_FILE["onnx"], threads=1)
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - whatever onnxruntime says, this network has no ONNX form here
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConverterRefused("onnx", reason) from None


class ConverterRefused(Exception):
    """A format's converter (or runtime) cannot take this network."""

    def __init__(self, fmt: str, reason: str):
        super().__init__(reason)
        self.fmt, self.reason = fmt, reason


def _existing_export(out: Path, force: bool) -> bool:
    """Whether an export that export.py wrote is at ``out``, to be replaced (``force``).

    Nothing but such an export is ever replaced: a folder that holds anything else, a file,
    a device or a link at ``out`` is refused, whatever ``force`` says.

    Raises:
        UsageError: something else is there, or an export is there without ``force``.
    """
    if out.is_symlink():
        raise UsageError(f"{{out}} {out}: is a link; give a folder path that is not one")
    if not out.exists():
        return False
    if not out.is_dir():
        raise UsageError(f"{{out}} {out}: is a file, not an export folder; give a new folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return False  # an empty folder: the export takes its place
    try:
        record = read_record(out)
    except UsageError:
        raise UsageError(f"{{out}} {out}: a folder that holds no export ({len(entries)} entries, no export.json "
                         "export.py wrote); export.py replaces only its own exports: give a new or empty folder"
                         ) from None
    others = sorted(set(entries) - {RECORD, "labels.txt", record["model"]})
    if others:
        raise UsageError(f"{{out}} {out}: holds files an export does not ({', '.join(others[:3])}); export.py "
                         "replaces only its own exports: give a new or empty folder")
    if not force:
        raise UsageError(f"{{out}} {out}: an export is already there ({record['format']}); give {{force=True}} to "
                         "replace it, or another {out}")
    return True


def export(run_dir, fmt: str = "tflite", *, quantize: str = "none", out=None, force: bool = False) -> Path:
    """Export a run folder's model; return the folder holding it, export.json and labels.txt.

    Two exports into one folder take turns: the second is refused while the first runs.

    Args:
        out: the export folder (default ``RUN_DIR/export/<format>[-<quantize>]``).
        force: replace an export that export.py wrote there (never anything else).

    Raises:
        UsageError: bad settings, a run that cannot export, something at ``out`` that is not
            an export of export.py's (or one, without ``force``), or an export into ``out``
            already running.
    """
    run_dir = validate.path(run_dir, "run_dir", "a run folder")
    from ..data import RESIZE_METHOD

    check_settings(fmt, quantize)
    quiet_converters()
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "export" / (fmt if quantize == "none" else f"{fmt}-{quantize}")
    _existing_export(out, force)  # before any work; checked again under the lock
    check_output_folder(out.parent, "out")
    try:
        with file_lock(out.parent / f".{out.name}.export.lock", wait=False):
            replace = _existing_export(out, force)
            model = load_exportable(run_dir)
            return _write(model, run_dir, out, fmt, quantize=quantize, replace=replace, resize_method=RESIZE_METHOD)
    except Busy as busy:
        raise UsageError(f"{{out}} {out}: another export into it is running (pid {busy.holder}); wait for it to "
                         "finish") from None


def _write(model: Exportable, run_dir: Path, out: Path, fmt: str, *, quantize: str, replace: bool,
           resize_method: str) -> Path:
    """The export written into a temporary folder beside ``out``, then renamed to it."""
    tmp = temporary_name(out, "partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        try:
            if fmt == "saved_model":
                _saved_model(model, tmp)
            elif fmt == "tflite":
                _tflite(model, tmp, quantize)
            else:
                _onnx(model, tmp)
        except ConverterRefused as refused:
            raise UsageError(f"{run_dir}: its network has no {refused.fmt} form ({refused.reason}); export it as "
                             "saved_model, which takes every network") from None
        except Exception as exc:  # TensorFlow's writers raise their own types for a full disk
            if is_disk_full(exc):
                raise DiskFullError(f"no space left on the device while writing {out}: free some space and "
                                    "run the same command again") from None
            raise
        target = tmp / MODEL_FILE[fmt]
        record = {
            "export_format": EXPORT_FORMAT, "format": fmt, "quantization": quantize, "model": MODEL_FILE[fmt],
            "sha256": tree_sha256(target), "classes": model.class_names, "image_size": model.image_size,
            "input": {"name": "images", "dtype": "uint8", "shape": [None, model.image_size, model.image_size, 3],
                      "range": [0, 255], "layout": "NHWC, RGB"},
            "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(model.class_names)]},
            "resize_method": resize_method, "kind": model.kind, "head": model.head,
            "source_run": str(run_dir.resolve()),
            "signatures": {"serving_default": "images", "serving_bytes": "encoded JPEG/PNG/BMP/GIF bytes, "
                           "decoded and resized in the graph by the toolkit's decode function (no EXIF "
                           "rotation, no DCT downscaling)"} if fmt == "saved_model" else None,
        }
        write_json(tmp / RECORD, record)
        write_text(tmp / "labels.txt", "".join(f"{name}\n" for name in model.class_names))
        if replace:  # an export of export.py's, checked under the lock: moved aside, then removed
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)  # a new name, or an empty folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
