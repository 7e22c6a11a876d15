"""The frozen network on ONNX Runtime: converted once, kept beside the embeddings, run batch by batch.

On a CPU, ONNX Runtime runs the extraction network (input scaling, backbone, pooling, the
flip average of ``--tta flip``) faster than TensorFlow's frozen graph (BENCHMARKS.md,
``benchmarks/performance.py``). The network is converted with tf2onnx from the same frozen
graph extraction runs in TensorFlow, once per backbone, size, weights, pooling and TTA, into
``<cache folder>/onnx/``:

``<slug>-<size>-<key hash>.onnx``   the network (written under a temporary name, then renamed)
``<slug>-<size>-<key hash>.json``   its record: its key, the model file's size and SHA-256, its
                                    input size and output width, a probe (the embeddings the
                                    TensorFlow network gave for :func:`probe_images`), the
                                    conversion's seconds; or why the converter could not take it

Opening a conversion proves it is the backbone's before it embeds anything (:func:`load_network`):
the record read by the guarded reader (a JSON record's bound), the file read once the same way
up to the size its record gives (a link to ``/dev/zero``, a FIFO or a larger file is refused,
never read without end), its checksum, then the network itself: one float input of the
backbone's size, a first output of the backbone's width, and the probe run again on ONNX
Runtime and compared with the record's (and, at conversion, with TensorFlow's). What fails
any of it is not intact: converted again, under the same lock, and a conversion that cannot
reproduce TensorFlow's embeddings is recorded as refused. Every batch's embeddings are checked
to be finite and of the width (:class:`OnnxEmbedder`). The model's bytes that were proved are
the bytes that run (a Ray actor gets them from the driver): the file is not read again.

Two runs converting the same network take turns (a lock file beside it); a temporary file a
killed conversion left is removed by the next. A network the converter cannot take is recorded
as such, so ``--runtime auto`` falls back to TensorFlow at once the next time.

What the probe proves: the file computes the embedding its record says for those pixels, and the
record was written for this key. Someone who can write the folder can write both; the folder is
the toolkit's own output, and a copied-in one is trusted as far as this check goes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, first_line
from ..io import RECORD_LIMIT, atomic_path, file_lock, read_json, read_regular, remove_abandoned, write_json

log = logging.getLogger(__name__)

INSTALL = "pip install onnxruntime tf2onnx onnx (in requirements.txt)"
OPSET = 17
PROBE_TOLERANCE = 1e-3  # of the probe's largest value: TensorFlow and ONNX Runtime differ by ~1e-5 of it


class NoOnnxForm(Exception):
    """The converter or the runtime cannot take this network (``reason`` says what it said)."""


class NotIntact(Exception):
    """A converted network that is not the one its record describes (why, in words)."""


def available() -> str | None:
    """None when ONNX Runtime and the converter can be imported, else what is missing."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def conversion_key(backbone, pooling: str, *, tta: str, seed: int) -> dict:
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


@dataclass(kw_only=True)
class Converted:
    """A converted network, proved: its file, the bytes that were proved (what runs), its embedding width,
    the conversion's seconds when it was done just now (else 0), and what it was proved on: the embeddings
    of :func:`probe_images` at ``size`` (None where only the bytes travel: a Ray actor's), which OpenVINO's
    compiled network is proved on too."""

    path: Path
    model: bytes
    width: int
    seconds: float = 0.0
    probe: list | None = None
    size: int = 0


def probe_images(size: int):
    """The fixed pixels a conversion is proved on: seeded noise and a smooth gradient, float32 0-255."""
    import numpy as np

    noise = np.random.default_rng(20261202).integers(0, 256, (size, size, 3)).astype(np.float32)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    gradient = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                         np.full((size, size), 128, np.float32)], axis=-1)
    return np.stack([noise, gradient])


def off_from_probe(got, probe) -> float | None:
    """The largest absolute difference between ``got`` and the proved ``probe`` (float64 arrays of one shape) where
    it is past :data:`PROBE_TOLERANCE` of the probe's largest value; None within it. The one fp32 rule a converted
    network (here) and OpenVINO's compiled one (:mod:`.openvino`) are held to."""
    import numpy as np

    off = float(np.max(np.abs(got - probe)))
    return off if off > PROBE_TOLERANCE * max(float(np.max(np.abs(probe))), 1e-30) else None


def check_network(model: bytes, size: int, *, width: int, probe) -> None:
    """Prove ``model`` is a network of this shape that gives ``probe`` for :func:`probe_images`.

    Raises:
        NotIntact: ONNX Runtime cannot load or run it, its input or output is not the backbone's, or its
            embeddings of the probe are not finite or not ``probe``'s.
    """
    import numpy as np

    try:
        session = ort_session(model, threads=1)
    except Exception as exc:  # noqa: BLE001 - whatever the runtime says, the file is not a network it can run
        raise NotIntact(f"ONNX Runtime cannot load it: {first_line(exc)}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4 \
            or list(inputs[0].shape[1:]) != [size, size, 3]:
        shapes = ", ".join(f"{i.type} {i.shape}" for i in inputs) or "none"
        raise NotIntact(f"it takes {shapes}, not one float input of {size}x{size}x3 images")
    if not outputs or len(outputs[0].shape) != 2 or outputs[0].shape[1] not in (width, None) \
            and not isinstance(outputs[0].shape[1], str):
        raise NotIntact(f"its output is {outputs[0].shape if outputs else 'missing'}, not embeddings of width "
                        f"{width}")
    try:
        got = np.asarray(session.run(None, {inputs[0].name: probe_images(size)})[0])
    except Exception as exc:  # noqa: BLE001 - a graph that cannot run (memory, shapes) is not the backbone's
        raise NotIntact(f"it cannot run on the probe: {first_line(exc)}") from None
    probe = np.asarray(probe, np.float64)
    if got.shape != probe.shape:
        raise NotIntact(f"it gives embeddings of shape {got.shape} for the probe, not {probe.shape}")
    if not np.isfinite(probe).all():
        raise NotIntact("its record's probe is not finite")
    if not np.isfinite(got).all():
        raise NotIntact("it gives embeddings that are not finite (NaN or infinite) for the probe")
    if (off := off_from_probe(got, probe)) is not None:
        raise NotIntact(f"its embeddings of the probe are off by up to {off:.3g} from the backbone's")


def _record(path: Path) -> dict | None:
    try:
        record = read_json(path.with_suffix(".json"), RECORD_LIMIT)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def load_network(path: Path, record: dict, backbone) -> Converted:
    """The conversion at ``path``, read once and proved against its ``record`` (see the module docstring).

    Raises:
        NotIntact: what is wrong with it.
    """
    size, expected = record.get("bytes"), backbone.spec.width
    width, probe = record.get("width"), record.get("probe")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or not isinstance(width, int) \
            or not isinstance(probe, list):
        raise NotIntact("its record does not give the file's size, the embedding width and the probe")
    if expected and width != expected:
        raise NotIntact(f"its record gives width {width}, the backbone's is {expected}")
    try:
        model = read_regular(path, size)
    except OSError as exc:
        raise NotIntact(exc.strerror or str(exc)) from None
    if len(model) != size:
        raise NotIntact(f"{len(model)} bytes, its record says {size}")
    if hashlib.sha256(model).hexdigest() != record.get("sha256"):
        raise NotIntact("its checksum is not its record's")
    try:
        check_network(model, backbone.image_size, width=width, probe=probe)
    except (TypeError, ValueError) as exc:  # a probe that is not a matrix of numbers
        raise NotIntact(f"its record's probe is not embeddings ({exc})") from None
    return Converted(path=path, model=model, width=width, probe=probe, size=backbone.image_size)


def convert(backbone, *, pooling: str, tta: str, seed: int, folder) -> Converted:
    """The network converted to ONNX in ``folder``, proved; converting it only when no intact conversion is there.

    Raises:
        NoOnnxForm: the converter or ONNX Runtime cannot take this network (said once, then remembered).
    """
    key = conversion_key(backbone, pooling, tta=tta, seed=seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = model_path(folder, backbone, key)
    with file_lock(path.with_suffix(".lock")):
        remove_abandoned(folder)  # a killed conversion's .<name>.onnx.<pid>.tmp
        record = _record(path)
        if record is not None and record.get("key") == key:
            if "refused" in record:
                raise NoOnnxForm(record["refused"])
            try:
                return load_network(path, record, backbone)
            except NotIntact as exc:
                log.warning("%s is not the converted network its record describes (%s); converting it again",
                            path, exc)
        record, model = _convert(backbone, pooling, tta, seed, path=path, key=key)
    if "refused" in record:
        raise NoOnnxForm(record["refused"])
    return Converted(path=path, model=model, width=record["width"], seconds=record["seconds"],
                     probe=record.get("probe"),
                     size=backbone.image_size)


def _convert(backbone, pooling: str, tta: str, seed: int, *, path: Path, key: dict) -> tuple[dict, bytes]:
    import numpy as np
    import tf2onnx

    from ..device import native_stderr_silenced, quiet_converters
    from .build import create_embedder, embedding_function

    quiet_converters()
    start = time.perf_counter()
    model = create_embedder(backbone, pooling, tta=tta, seed=seed)
    size = backbone.image_size
    embed = embedding_function(model, size, freeze=False)
    record, data = {"key": key}, b""
    with atomic_path(path) as tmp:
        try:
            with native_stderr_silenced():
                tf2onnx.convert.from_function(embed, input_signature=embed.input_signature, opset=OPSET,
                                              output_path=str(tmp))
            data = read_regular(tmp)
            probe = np.asarray(embed(probe_images(size)), np.float32)
            if probe.ndim != 2:
                raise NotIntact(f"the network gives embeddings of shape {probe.shape[1:]}, not a vector")
            # tf2onnx leaves ops it cannot convert as they are: the runtime judges, on the probe
            check_network(data, size, width=probe.shape[1], probe=probe)
        except Exception as exc:
            if isinstance(exc, OSError):  # a full disk, a folder that cannot be written: not the network's
                raise
            reason = first_line(exc)
            record["refused"] = (f"the converted network does not reproduce TensorFlow's: {reason}"
                                 if isinstance(exc, NotIntact) else reason)
            data = b""
            tmp.write_bytes(data)
        else:
            record.update(width=int(probe.shape[1]), input=[size, size, 3], probe=[[float(v) for v in row]
                                                                                   for row in probe])
        record.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    record["seconds"] = round(time.perf_counter() - start, 2)
    write_json(path.with_suffix(".json"), record)
    return record, data


def converted_or_none(backbone, pooling: str, *, tta: str, seed: int, folder, runtime: str) -> Converted | None:
    """The network converted to ONNX when ``runtime`` ("tf", "onnx", "openvino" or "auto") reads it, else None
    (TensorFlow runs it). Under "auto" a network the converter cannot take, or a folder that cannot hold it,
    means TensorFlow (one INFO line); under a runtime named it is the user's error, in one line.

    Raises:
        UsageError: "onnx" or "openvino" and no ONNX form, or no folder for it.
        DiskFullError: the disk filled up while converting.
    """
    from ..errors import DiskFullError, is_disk_full

    if runtime == "tf":
        return None
    try:
        return convert(backbone, pooling=pooling, tta=tta, seed=seed, folder=folder)
    except (NoOnnxForm, OSError) as exc:
        if isinstance(exc, OSError):
            if is_disk_full(exc):
                raise DiskFullError(f"no space left on the device while converting the network into {folder}: "
                                    "free some space, or give {runtime} tf") from None
            why = f"{folder} cannot hold the converted network: {exc.strerror or exc}"
        else:
            why = f"{backbone.name} has no ONNX form ({exc})"
        if runtime != "auto":
            raise UsageError(f"{{runtime}} {runtime}: {why}; give {{runtime}} tf (or auto)") from None
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
    """A converted network on ONNX Runtime: float32 0-255 images in, embeddings out, each batch's checked.

    Args:
        model: the .onnx file, its bytes, or a :class:`Converted` (its proved bytes run).
        threads: ONNX Runtime's intra-op threads; None: every core this process may use (its
            affinity: a Ray actor's, a container's share).
        width: the embedding width each batch must have (a Converted's own by default).
        name: what the messages call it (a Converted's file by default).

    Raises (when called):
        UsageError: a batch's embeddings are not finite or not of the width: the network is not intact.
    """

    def __init__(self, model, threads: int | None = None, width: int | None = None, name=None):
        import onnxruntime as ort

        if isinstance(model, Converted):
            width, name, model = width or model.width, name or model.path, model.model
        self.threads = threads or cores()
        self.session = ort_session(model, self.threads)
        self.input = self.session.get_inputs()[0].name
        self.version = ort.__version__
        self.width, self.name = width, name or (model if not isinstance(model, bytes) else "the converted network")

    def __call__(self, images):
        import numpy as np

        images = np.asarray(images, np.float32)
        out = self.session.run(None, {self.input: images})[0]
        problem = batch_problem(out, len(images), self.width)
        if problem:
            raise UsageError(f"{self.name}: the converted network gave {problem}; it is not intact: delete it to "
                             "convert it again, or give {runtime} tf")
        return out


def batch_problem(out, n: int, width: int | None) -> str | None:
    """What is wrong with a batch of ``n`` images' embeddings ``out`` from a runtime (None: nothing): not a
    matrix of ``n`` rows of the width, or not finite."""
    import numpy as np

    if out.ndim != 2 or len(out) != n or (width and out.shape[1] != width):
        return f"embeddings of shape {out.shape} for {n} images"
    if not np.isfinite(out).all():
        return "embeddings that are not finite (NaN or infinite)"
    return None
