"""What runs the frozen network, and at what precision: TensorFlow, ONNX Runtime or OpenVINO; fp32 or bf16.

Resolved once for a run (:func:`choose`), precision first, then the runtime:

- ``precision`` "auto" is bf16 where OpenVINO is installed and the CPU computes in bf16 natively
  (:func:`features.models.openvino.native_bf16`), else fp32. bf16 embeddings are not fp32 ones (a
  cosine of 0.99-0.999 to them): a bf16 cache has its own name and key, and the rule that lets
  ``auto`` choose it is :data:`BF16_BY_DEFAULT`, from what it cost in accuracy.
- ``runtime`` "auto" is TensorFlow on a GPU; on a CPU, OpenVINO for bf16 (ONNX Runtime has no bf16
  path on CPUs: microsoft/onnxruntime#19937) and :data:`FP32_RUNTIME` for fp32, where installed; the
  network is converted once to ONNX (:mod:`.onnx`), which both read. A network that cannot be
  converted, or that OpenVINO cannot compile, falls back (ONNX Runtime, then TensorFlow, at fp32)
  with one INFO line; asked for by name, it is refused in one line that names what works.

:func:`prepare` does it for one network and returns what embeds a batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..errors import UsageError
from . import onnx, openvino

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "tf", "onnx", "openvino")
PRECISIONS = ("auto", "fp32", "bf16")
LABELS = {"tf": "TensorFlow", "onnx": "ONNX Runtime", "openvino": "OpenVINO"}
# Measured by benchmarks/runtime.py (BENCHMARKS.md, "runtime"; 2 cores of an AMD EPYC with AVX-512 BF16):
# logistic regression 5-fold cross-validated on the same folds of the fp32 and the bf16 cache of each shared
# dataset, flowers 0.9151 and 0.9144 (-0.06 points), cats vs dogs 0.9904 and 0.9912 (+0.08): within the
# 0.2 points allowed on both; and bf16 ran extract.py at 1.47x ONNX Runtime's fp32 (256.3 img/s, 174.5).
BF16_BY_DEFAULT = True
# fp32: ONNX Runtime 191.6 img/s, OpenVINO 162.6 (the network alone, the same run; an Intel Xeon gave 179.7
# and 164.4): ONNX Runtime.
FP32_RUNTIME = "onnx"


@dataclass(frozen=True)
class Choice:
    """What runs the network (``runtime``: "tf", "onnx" or "openvino") and at what ``precision``."""

    runtime: str
    precision: str = "fp32"

    def describe(self) -> str:
        return f"{LABELS[self.runtime]} at {self.precision}"


def check_runtime(runtime: str, precision: str) -> None:
    """Refuse an unknown name, or a runtime or precision this machine cannot give, before any work.

    Raises:
        UsageError: naming the parameter, what is missing and what to give instead.
    """
    if runtime not in RUNTIMES:
        raise UsageError(f"{{runtime}} {runtime}: choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise UsageError(f"{{precision}} {precision}: choose one of {', '.join(PRECISIONS)}")
    if runtime in ("onnx", "openvino") and onnx.available() is not None:
        raise UsageError(f"{{runtime}} {runtime}: ONNX Runtime or tf2onnx is not installed ({onnx.available()}); "
                         f"run '{onnx.INSTALL}' or give {{runtime}} tf")
    if runtime == "openvino" and openvino.available() is not None:
        raise UsageError(f"{{runtime}} openvino: OpenVINO is not installed ({openvino.available()}); run "
                         f"'{openvino.INSTALL}' or give {{runtime}} onnx or tf")
    why = why_no_bf16(runtime) if precision == "bf16" else None
    if why:
        fix = "give {runtime} openvino or auto, or {precision} fp32" if runtime in ("tf", "onnx") else \
            f"run '{openvino.INSTALL}' or give {{precision}} fp32" if openvino.available() is not None else \
            "give {precision} fp32 or auto"
        raise UsageError(f"{{precision}} bf16: {why}; {fix}")


def why_no_bf16(runtime: str = "auto") -> str | None:
    """Why ``runtime`` cannot compute in bf16 here (None: it can)."""
    if runtime in ("tf", "onnx"):
        return f"bf16 runs on OpenVINO; {LABELS[runtime]} has no bf16 path on a CPU here"
    if openvino.available() is not None:
        return f"bf16 runs on OpenVINO, which is not installed ({openvino.available()})"
    if not openvino.native_bf16():
        return "this CPU has no native bf16 (no AVX-512 BF16 or AMX, as OpenVINO reports it), so bf16 would be " \
               "emulated and slower"
    return None


def choose(runtime: str = "auto", precision: str = "auto", gpu: bool = False) -> Choice:
    """The runtime and precision for ``runtime`` and ``precision`` as asked (see the module docstring).

    Raises:
        UsageError: as :func:`check_runtime`.
    """
    check_runtime(runtime, precision)
    converts = onnx.available() is None
    has_openvino = converts and openvino.available() is None
    if precision == "auto":
        bf16 = (runtime == "openvino" or runtime == "auto" and not gpu) and has_openvino and BF16_BY_DEFAULT \
            and openvino.native_bf16()
        precision = "bf16" if bf16 else "fp32"
    if runtime != "auto":
        return Choice(runtime, precision)
    if precision == "bf16":
        return Choice("openvino", precision)
    if gpu or not converts:
        return Choice("tf", precision)
    return Choice(FP32_RUNTIME if FP32_RUNTIME == "onnx" or has_openvino else "onnx", precision)


@dataclass(kw_only=True)
class Prepared:
    """A network ready to embed: ``embed`` (None: TensorFlow's frozen graph, built by the caller), the
    ``choice`` that runs it, its ``converted`` ONNX form (None on TensorFlow), the conversion's seconds (0: kept
    from before) and OpenVINO's compilation's."""

    embed: object
    choice: Choice
    converted: object = None
    seconds: float = 0.0
    compile_seconds: float = 0.0


def prepare(backbone, choice: Choice, *, pooling: str, tta: str, seed: int, folder, asked: str = "auto",
            threads: int | None = None, build: bool = True) -> Prepared:
    """The network of ``backbone`` on the runtime ``choice`` names, converted into ``folder`` once.

    Args:
        asked: the runtime as the user gave it: "auto" falls back where the chosen one cannot run the
            network (one INFO line); a runtime asked for by name is refused in one line.
        build: False: only the conversion is made and proved (a Ray driver: its actors compile it).

    Raises:
        UsageError: the runtime asked for by name cannot run this network.
        DiskFullError: the disk filled up while converting.
    """
    if choice.runtime == "tf":
        return Prepared(embed=None, choice=choice)
    converted = onnx.converted_or_none(backbone, pooling, tta=tta, seed=seed, folder=folder,
                                       runtime="auto" if asked == "auto" else
                                       choice.runtime)
    if converted is None:  # under auto: TensorFlow, said in one INFO line
        return Prepared(embed=None, choice=Choice("tf", "fp32"))
    if choice.runtime == "openvino":
        try:
            start = time.perf_counter()
            if build:
                embed = openvino.OpenVinoEmbedder(converted, choice.precision, threads, cache_dir(folder))
            else:  # proved to compile here (and kept in OpenVINO's cache); the actors compile their own
                openvino.compile_proved(converted, choice.precision, threads=threads or onnx.cores(),
                                        cache_dir=cache_dir(folder))
                embed = None
            return Prepared(embed=embed, choice=choice, converted=converted, seconds=converted.seconds,
                            compile_seconds=time.perf_counter() - start)
        except openvino.NoOpenVinoForm as exc:
            if asked != "auto":
                raise UsageError(f"{{runtime}} {asked}: OpenVINO cannot compile {backbone.name} ({exc}); give "
                                 "{runtime} onnx or tf") from None
            log.info("runtime: ONNX Runtime at fp32, as OpenVINO cannot compile %s here: %s", backbone.name, exc)
            choice = Choice("onnx", "fp32")
    embed = onnx.OnnxEmbedder(converted, threads) if build else None
    return Prepared(embed=embed, choice=choice, converted=converted, seconds=converted.seconds)


def cache_dir(folder):
    """OpenVINO's model cache: beside the conversions."""
    from pathlib import Path

    return Path(folder) / "openvino"


def embedder(model: bytes, choice: Choice, *, width: int | None = None, threads: int | None = None):
    """What embeds a batch on ``choice``'s runtime, from a converted network's proved bytes (a Ray actor's).

    Raises:
        UsageError: bf16 on a machine without native bf16.
    """
    if choice.runtime == "openvino":
        if choice.precision == "bf16" and not openvino.native_bf16():
            import socket

            raise UsageError(f"node {socket.gethostname()} has no native bf16 (no AVX-512 BF16 or AMX): run the "
                             "extraction at {precision} fp32, or on nodes that have it")
        from pathlib import Path

        converted = onnx.Converted(path=Path("the converted network"), model=model, width=width or 0)
        return openvino.OpenVinoEmbedder(converted, choice.precision, threads)
    return onnx.OnnxEmbedder(model, threads, width=width)


def version(runtime: str) -> str:
    """The version of what ran the network."""
    if runtime == "openvino":
        return openvino.version()
    if runtime == "onnx":
        import onnxruntime

        return onnxruntime.__version__
    import tensorflow as tf

    return tf.__version__
