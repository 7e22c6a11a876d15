"""The frozen network on OpenVINO: the converted ONNX network compiled for this CPU, at fp32 or bf16.

OpenVINO reads the network :mod:`.onnx` converts and proves (its proved bytes, never the file
again), compiles it for the CPU once per process, and keeps the compiled blob in its own model
cache (``CACHE_DIR``) in ``<cache folder>/onnx/openvino/``, so the next run's compilation is a read.
Its precision is asked for, never left to OpenVINO's default: OpenVINO picks bf16 by itself on a
CPU whose instructions have it (``OPTIMIZATION_CAPABILITIES`` lists ``BF16``: AVX-512 BF16 or AMX),
and bf16 embeddings are not fp32 ones (a cache records which it holds).

Threads: the process's cores (its affinity: a Ray actor's share, a container's), one stream
(``PERFORMANCE_HINT`` LATENCY): a batch at a time, as extraction feeds it; ``benchmarks/runtime.py``
measures it against two streams of one thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UsageError, first_line

log = logging.getLogger(__name__)

INSTALL = "pip install openvino (in requirements.txt)"
PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}  # the toolkit's names -> OpenVINO's


def available() -> str | None:
    """None when OpenVINO can be imported, else what is missing."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def version() -> str:
    import openvino

    return openvino.__version__.split("-")[0]


def native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX), as OpenVINO's CPU plugin says."""
    if available() is not None:
        return False
    import openvino as ov

    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - a CPU plugin that cannot answer has no bf16 to offer
        return False


class NoOpenVinoForm(Exception):
    """OpenVINO cannot read or compile this network (``str()`` says what it said)."""


def compile_network(model: bytes, precision: str, threads: int, cache_dir=None):
    """The ONNX network ``model`` compiled for the CPU at ``precision`` ("fp32" or "bf16") on ``threads`` threads.

    Raises:
        NoOpenVinoForm: OpenVINO cannot read or compile it.
    """
    import openvino as ov

    core = ov.Core()
    if cache_dir is not None:
        try:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache_dir)})
        except (OSError, RuntimeError) as exc:  # a folder that cannot hold it: compiled each time instead
            log.debug("OpenVINO's model cache not used (%s)", exc)
    config = {"INFERENCE_PRECISION_HINT": PRECISION_HINT[precision], "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": int(threads)}
    try:
        return core.compile_model(core.read_model(model), "CPU", config)
    except Exception as exc:  # noqa: BLE001 - whatever OpenVINO says, it cannot run this network
        raise NoOpenVinoForm(first_line(exc)) from None


class OpenVinoEmbedder:
    """A converted network on OpenVINO: float32 0-255 images in, embeddings out, each batch's checked.

    Args:
        converted: a :class:`~features.models.onnx.Converted` (its proved bytes are compiled).
        precision: "fp32" or "bf16".
        threads: None: every core this process may use.
        cache_dir: OpenVINO's model cache (None: none).

    Raises:
        NoOpenVinoForm: OpenVINO cannot compile the network.
        UsageError (when called): a batch's embeddings are not finite or not of the width.
    """

    def __init__(self, converted, precision: str = "fp32", threads: int | None = None, cache_dir=None):
        from .onnx import cores

        self.threads, self.precision = threads or cores(), precision
        self.width, self.name = converted.width, converted.path
        self.compiled = compile_network(converted.model, precision, self.threads, cache_dir)
        self.request = self.compiled.create_infer_request()
        self.version = version()

    def __call__(self, images):
        import numpy as np

        images = np.ascontiguousarray(images, np.float32)
        out = np.array(self.request.infer([images])[0], np.float32)  # a copy: the request reuses its buffer
        problem = None
        if out.ndim != 2 or len(out) != len(images) or (self.width and out.shape[1] != self.width):
            problem = f"embeddings of shape {out.shape} for {len(images)} images"
        elif not np.isfinite(out).all():
            problem = "embeddings that are not finite (NaN or infinite)"
        if problem:
            raise UsageError(f"{self.name}: OpenVINO gave {problem} for the converted network; it is not intact: "
                             "delete it to convert it again, or give {runtime} onnx or tf")
        return out
