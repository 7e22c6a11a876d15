"""The frozen network on ONNX Runtime: converted once, kept beside the embeddings, run batch by batch.

On a CPU, ONNX Runtime runs the extraction network (input scaling, backbone, pooling, the
flip average of ``--tta flip``) faster than TensorFlow's frozen graph (BENCHMARKS.md,
``benchmarks/performance.py``). The network is converted with tf2onnx from the same frozen
graph extraction runs in TensorFlow, once per backbone, size, weights, pooling and TTA, into
``<cache folder>/onnx/``:

``<slug>-<size>-<key hash>.onnx``   the network (written under a temporary name, then renamed)
``<slug>-<size>-<key hash>.json``   its key, the model file's SHA-256, the conversion's seconds,
                                    or why the converter could not take the network

A conversion whose record is missing, differs from the key or whose file's checksum differs
is done again; two runs converting the same network take turns (a lock file beside it).
A network the converter cannot take is recorded as such, so ``--runtime auto`` falls back to
TensorFlow at once the next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..io import atomic_path, file_lock, file_sha256, write_json

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "tf", "onnx")
INSTALL = "pip install onnxruntime tf2onnx onnx (in requirements.txt)"
OPSET = 17


class NoOnnxForm(Exception):
    """The converter or the runtime cannot take this network (``reason`` says what it said)."""


def available() -> str | None:
    """None when ONNX Runtime and the converter can be imported, else what is missing."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def resolve_runtime(runtime: str, gpu: bool) -> str:
    """"tf" or "onnx" for ``runtime`` ("auto": ONNX Runtime on a CPU where it is installed).

    Raises:
        UsageError: an unknown runtime, or "onnx" where it is not installed.
    """
    if runtime not in RUNTIMES:
        raise UsageError(f"{{runtime}} {runtime}: choose one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnx" if not gpu and available() is None else "tf"
    if runtime == "onnx" and available() is not None:
        raise UsageError(f"{{runtime}} onnx: ONNX Runtime or tf2onnx is not installed ({available()}); "
                         f"run '{INSTALL}' or give {{runtime}} tf")
    return runtime


def conversion_key(backbone, pooling: str, tta: str, seed: int) -> dict:
    """What a converted network is made of."""
    import keras
    import tensorflow as tf
    import tf2onnx

    key = {"backbone": backbone.name, "image_size": backbone.image_size, "weights": backbone.weights,
           "weights_sha256": backbone.weights_sha256, "pooling": pooling, "tta": tta, "opset": OPSET,
           "tensorflow": tf.__version__, "keras": keras.__version__, "tf2onnx": tf2onnx.__version__}
    if backbone.weights == "none":
        key["seed"] = seed  # the random network is seeded: another seed is another network
    return key


def model_path(folder, backbone, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / f"{backbone.spec.slug}-{backbone.image_size}-{digest}.onnx"


@dataclass
class Converted:
    """A converted network: its file, and the conversion's seconds when it was done just now (else 0)."""

    path: Path
    seconds: float = 0.0


def _record(path: Path) -> dict | None:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None


def _up_to_date(path: Path, key: dict) -> dict | None:
    """The record of the conversion at ``path`` when it was made with ``key`` and is intact."""
    record = _record(path)
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    if "refused" in record:
        return record
    try:
        return record if file_sha256(path) == record.get("sha256") else None
    except OSError:
        return None


def convert(backbone, pooling: str, tta: str, seed: int, folder) -> Converted:
    """The network converted to ONNX in ``folder``, converting it only when no intact conversion is there.

    Raises:
        NoOnnxForm: the converter or ONNX Runtime cannot take this network (said once, then remembered).
    """
    key = conversion_key(backbone, pooling, tta, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = model_path(folder, backbone, key)
    with file_lock(path.with_suffix(".lock")):
        record = _up_to_date(path, key)
        if record is None:
            record = _convert(backbone, pooling, tta, seed, path, key)
            fresh = record.get("seconds", 0.0)
        else:
            fresh = 0.0
    if "refused" in record:
        raise NoOnnxForm(record["refused"])
    return Converted(path, fresh)


def _convert(backbone, pooling: str, tta: str, seed: int, path: Path, key: dict) -> dict:
    import tf2onnx

    from ..device import native_stderr_silenced, quiet_converters
    from .build import create_embedder, embedding_function

    quiet_converters()
    start = time.perf_counter()
    model = create_embedder(backbone, pooling, tta, seed)
    size = backbone.image_size
    embed = embedding_function(model, size, freeze=False)
    record = {"key": key}
    with atomic_path(path) as tmp:
        try:
            with native_stderr_silenced():
                tf2onnx.convert.from_function(embed, input_signature=embed.input_signature, opset=OPSET,
                                              output_path=str(tmp))
            ort_session(tmp, threads=1)  # tf2onnx leaves ops it cannot convert as they are: the runtime judges
        except Exception as exc:
            if isinstance(exc, OSError):  # a full disk, a folder that cannot be written: not the network's
                raise
            record["refused"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            tmp.write_bytes(b"")
        record["sha256"] = file_sha256(tmp)
    record["seconds"] = round(time.perf_counter() - start, 2)
    write_json(path.with_suffix(".json"), record)
    return record


def converted_or_none(backbone, pooling: str, tta: str, seed: int, folder, runtime: str) -> Converted | None:
    """The network converted for ONNX Runtime when ``runtime`` ("tf", "onnx" or "auto") runs it there, else None
    (TensorFlow runs it). Under "auto" a network the converter cannot take, or a folder that cannot hold it,
    means TensorFlow (one INFO line); under "onnx" it is the user's error, in one line.

    Raises:
        UsageError: "onnx" and no ONNX form, or no folder for it.
        DiskFullError: the disk filled up while converting.
    """
    from ..errors import DiskFullError, is_disk_full

    if runtime == "tf":
        return None
    try:
        return convert(backbone, pooling, tta, seed, folder)
    except (NoOnnxForm, OSError) as exc:
        if isinstance(exc, OSError):
            if is_disk_full(exc):
                raise DiskFullError(f"no space left on the device while converting the network into {folder}: "
                                    "free some space, or give {runtime} tf") from None
            why = f"{folder} cannot hold the converted network: {exc.strerror or exc}"
        else:
            why = f"{backbone.name} has no ONNX form ({exc})"
        if runtime == "onnx":
            raise UsageError(f"{{runtime}} onnx: {why}; give {{runtime}} tf (or auto)") from None
        log.info("runtime: TensorFlow, as ONNX Runtime cannot run it here: %s", why)
        return None


def cores() -> int:
    """The cores this process may run on (its affinity, a container's or a Ray actor's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ort_session(path, threads: int | None = None):
    """The one way the toolkit opens an ONNX Runtime session: on the CPU, ``threads`` intra-op threads
    (None: every core this process may use), one inter-op thread, the runtime's own warnings kept quiet.

    Args:
        path: the .onnx file, or its bytes.
    """
    import onnxruntime as ort

    threads = threads or cores()

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxEmbedder:
    """A converted network on ONNX Runtime: float32 0-255 images in, embeddings out.

    Args:
        path: the .onnx file, or its bytes.
        threads: ONNX Runtime's intra-op threads; None: every core this process may use (its
            affinity: a Ray actor's, a container's share).
    """

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        self.threads = threads or cores()
        self.session = ort_session(path, self.threads)
        self.input = self.session.get_inputs()[0].name
        self.version = ort.__version__

    def __call__(self, images):
        import numpy as np

        return self.session.run(None, {self.input: np.asarray(images, np.float32)})[0]
