"""The frozen network on OpenVINO: the converted ONNX network compiled for this CPU, at fp32 or bf16.

OpenVINO reads the network :mod:`.onnx` converts and proves (its proved bytes, never the file
again), compiles it for the CPU once per process, and keeps the compiled blob in its own model
cache (``CACHE_DIR``) in ``<cache folder>/onnx/openvino/``, so the next run's compilation is a read.
OpenVINO serves a blob of the expected name without looking at what it computes, so what it compiled
or read is proved on the conversion's probe before any batch (:func:`compile_proved`).
Its precision is asked for, never left to OpenVINO's default: OpenVINO picks bf16 by itself on a
CPU whose instructions have it (``OPTIMIZATION_CAPABILITIES`` lists ``BF16``: AVX-512 BF16 or AMX),
and bf16 embeddings are not fp32 ones (a cache records which it holds).

Threads: the process's cores (its affinity: a Ray actor's share, a container's), shared by
:data:`STREAMS` streams; with more than one, each batch is split between them and its parts run at
once (OpenVINO's throughput mode). ``benchmarks/runtime.py`` measures one stream against two.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UsageError, first_line

log = logging.getLogger(__name__)

INSTALL = "pip install openvino (in requirements.txt)"
PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}  # the toolkit's names -> OpenVINO's
# Streams a network runs on (each batch split between them). extract.py at bf16 on 2 cores: one stream of two
# threads 256.3 img/s, two streams of one thread 243.6 (benchmarks/runtime.py, BENCHMARKS.md "runtime").
STREAMS = 1


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


# How near the compiled network's embeddings of the probe must be to those the conversion was proved with. At
# fp32: the conversion's own tolerance (OpenVINO f32 is within 2e-6 of the probe's largest value for Lite0). At
# bf16 the values move (Lite0: up to 17% of the largest, the probe's noise and gradient being no photos) but not
# their direction: each probe image's cosine similarity to its proved embedding at least BF16_PROBE_COSINE
# (Lite0 0.997 and 0.974; the random-weights Lite0's blob in the ImageNet one's place 0.13 and 0.16).
BF16_PROBE_COSINE = 0.9


def probe_problem(compiled, converted, precision: str) -> str | None:
    """What is wrong with the compiled network's embeddings of the conversion's probe (None: nothing, or no
    probe to run: a Ray actor's bytes)."""
    import numpy as np

    from .onnx import off_from_probe, probe_images

    if converted.probe is None or not converted.size:
        return None
    try:
        got = np.asarray(compiled.create_infer_request().infer([probe_images(converted.size)])[0], np.float64)
        probe = np.asarray(converted.probe, np.float64)
    except Exception as exc:  # noqa: BLE001 - a compiled network that cannot run the probe is not the network
        return f"no embeddings of the probe ({first_line(exc)})"
    if got.shape != probe.shape:
        return f"embeddings of shape {got.shape} for the probe, not {probe.shape}"
    if not np.isfinite(got).all():
        return "embeddings of the probe that are not finite"
    if precision == "fp32":
        off = off_from_probe(got, probe)
        return None if off is None else f"embeddings of the probe off by up to {off:.3g} from the proved network's"
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(probe, axis=1)
    cosine = float(np.min(np.sum(got * probe, axis=1) / np.where(norms > 0, norms, 1)))
    if cosine < BF16_PROBE_COSINE:
        return (f"embeddings of the probe at cosine {cosine:.3f} to the proved network's (at least "
                f"{BF16_PROBE_COSINE} at bf16)")
    return None


def compile_proved(converted, precision: str, *, threads: int, cache_dir=None, streams: int = 1):
    """:func:`compile_network` of ``converted``'s proved bytes, then the conversion's probe run through what
    OpenVINO compiled or took from its model cache: a blob that is not this network's (a copied-over cache)
    is dropped with a warning and the network compiled again.

    Raises:
        NoOpenVinoForm: OpenVINO cannot compile it, or what it compiles afresh does not give the probe's
            embeddings.
    """
    compiled = compile_network(converted.model, precision, threads=threads, cache_dir=cache_dir, streams=streams)
    problem = probe_problem(compiled, converted, precision)
    if problem and cache_dir is not None:
        log.warning("%s: OpenVINO's compiled network gave %s: its model cache %s is cleared and the network "
                    "compiled again", converted.path, problem, cache_dir)
        clear_cache(cache_dir)
        compiled = compile_network(converted.model, precision, threads=threads, cache_dir=cache_dir, streams=streams)
        problem = probe_problem(compiled, converted, precision)
    if problem:
        raise NoOpenVinoForm(f"what it compiles gives {problem}")
    return compiled


def clear_cache(folder) -> None:
    """Remove every file in OpenVINO's model cache ``folder`` (its blobs are made again as they are needed)."""
    import os

    try:
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
    except OSError as exc:
        log.debug("OpenVINO's model cache %s not cleared (%s)", folder, exc)


def compile_network(model: bytes, precision: str, *, threads: int, cache_dir=None, streams: int = 1):
    """The ONNX network ``model`` compiled for the CPU at ``precision`` ("fp32" or "bf16") on ``threads`` threads
    shared by ``streams`` streams.

    Raises:
        NoOpenVinoForm: OpenVINO cannot read or compile it.
    """
    import openvino as ov

    core = ov.Core()
    cache_dir = usable_cache(cache_dir) if cache_dir is not None else None
    if cache_dir is not None:
        try:
            core.set_property({"CACHE_DIR": str(cache_dir)})
        except RuntimeError as exc:  # compiled each time instead
            log.debug("OpenVINO's model cache not used (%s)", exc)
    config = {"INFERENCE_PRECISION_HINT": PRECISION_HINT[precision], "INFERENCE_NUM_THREADS": int(threads)}
    config.update({"PERFORMANCE_HINT": "LATENCY"} if streams == 1 else
                  {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": int(streams)})
    try:
        return core.compile_model(core.read_model(model), "CPU", config)
    except Exception as exc:  # noqa: BLE001 - whatever OpenVINO says, it cannot run this network
        raise NoOpenVinoForm(first_line(exc)) from None


def usable_cache(folder) -> Path | None:
    """OpenVINO's model cache ``folder`` (made here), with anything in it that is not a regular file removed:
    OpenVINO opens its blobs by name, and a FIFO there makes it wait forever (seen: a compile that never
    returned); a folder that is a link, a file, or cannot be made or cleaned is not used (None: compiled each
    time). OpenVINO checks the blobs themselves and compiles again over a damaged one (seen: cut short, random)."""
    import os
    import shutil

    folder = Path(folder)
    try:
        if folder.is_symlink() or folder.exists() and not folder.is_dir():
            log.warning("%s is not a folder: OpenVINO's model cache not used (the network is compiled each time)",
                        folder)
            return None
        folder.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(folder):
            if not entry.is_file(follow_symlinks=False):
                log.warning("%s in OpenVINO's model cache is not a regular file: removed", entry.path)
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
    except OSError as exc:  # a folder that cannot hold it or be cleaned: compiled each time instead
        log.debug("OpenVINO's model cache not used (%s)", exc)
        return None
    return folder


class OpenVinoEmbedder:
    """A converted network on OpenVINO: float32 0-255 images in, embeddings out, each batch's checked.

    Args:
        converted: a :class:`~features.models.onnx.Converted` (its proved bytes are compiled).
        precision: "fp32" or "bf16".
        threads: None: every core this process may use.
        cache_dir: OpenVINO's model cache (None: none).
        streams: None: :data:`STREAMS` (at most one a thread).

    Raises:
        NoOpenVinoForm: OpenVINO cannot compile the network, or what it compiles is not the network
            (:func:`compile_proved`).
        UsageError (when called): a batch's embeddings are not finite or not of the width.
    """

    def __init__(self, converted, precision: str = "fp32", threads: int | None = None, cache_dir=None,
                 streams: int | None = None):
        from .onnx import cores

        self.threads, self.precision = threads or cores(), precision
        self.streams = max(1, min(streams or STREAMS, self.threads))
        self.width, self.name = converted.width, converted.path
        self.compiled = compile_proved(converted, precision, threads=self.threads, cache_dir=cache_dir,
                                       streams=self.streams)
        self.requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
        self.version = version()

    def __call__(self, images):
        import numpy as np

        from .onnx import batch_problem

        images = np.ascontiguousarray(images, np.float32)
        if self.streams == 1:
            out = np.array(self.requests[0].infer([images])[0], np.float32)  # a copy: the request reuses its buffer
        else:  # the batch split between the streams, its parts run at once
            parts = [p for p in np.array_split(images, self.streams) if len(p)]
            for request, part in zip(self.requests, parts):
                request.start_async([np.ascontiguousarray(part)])
            for request in self.requests[:len(parts)]:
                request.wait()
            out = np.vstack([np.array(r.get_output_tensor(0).data, np.float32) for r in self.requests[:len(parts)]])
        problem = batch_problem(out, len(images), self.width)
        if problem:
            raise UsageError(f"{self.name}: OpenVINO gave {problem} for the converted network; it is not intact: "
                             "delete it to convert it again, or give {runtime} onnx or tf")
        return out
