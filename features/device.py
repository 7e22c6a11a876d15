"""TensorFlow's native start-up output, and what the toolkit says about the GPU instead.

TensorFlow's C++ side prints a dozen lines when it is imported (oneDNN, CUDA stubs, CPU
features, and ``failed call to cuInit`` on a machine without a GPU, which reads as a
failure). Most are written before absl's logging is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` cannot silence them (tensorflow/tensorflow#1258): the command
line quiets the first import of TensorFlow at the file-descriptor level
(:func:`quiet_tensorflow`), and ``-v`` brings everything back. What matters to a user,
a GPU that is there but unusable, is said once, in the toolkit's words
(:func:`report_unusable_gpu`). Also: the GPUs TensorFlow sees, and the library versions
recorded beside every result.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from contextlib import contextmanager

log = logging.getLogger(__name__)

_GPU_MARKERS = ("/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/kfd")
_reported = False


@contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the duration (C++ writes go there too)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            with native_stderr_silenced():
                self.loader.exec_module(module)
        finally:  # the module keeps its own loader, as if imported plainly
            module.__loader__ = module.__spec__.loader = self.loader


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the usual way once, and loads it with native stderr silenced."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; the lookup below must not find this finder again
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def verbose() -> bool:
    """-v: the toolkit logs at DEBUG, and the libraries' own lines (converters, runtimes, Ray) are shown."""
    return logging.getLogger("features").isEnabledFor(logging.DEBUG)


def quiet_converters() -> None:
    """TensorFlow's and tf2onnx's own progress lines (INFO) stay out of the output, unless -v."""
    if not verbose():
        for name in ("tensorflow", "tf2onnx", "absl"):
            logging.getLogger(name).setLevel(logging.WARNING)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's native logging quiet: its start-up lines and its INFO to ERROR messages.

    TensorFlow is not imported here: whenever it is first imported, that import runs with
    native stderr silenced. Python's own warnings and errors are not affected after it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides cuInit's error, which comes later
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


def gpu_present() -> bool:
    """A GPU device node or driver is on this machine, whether or not TensorFlow can use it."""
    return any(os.path.exists(p) for p in _GPU_MARKERS)


def report_unusable_gpu() -> None:
    """Warn once when the machine has a GPU that TensorFlow cannot use."""
    global _reported
    if _reported:
        return
    _reported = True
    if not gpu_present():
        return
    import keras

    if keras.backend.backend() != "tensorflow":  # another backend finds its own devices
        return
    if not visible_gpus():
        log.warning("this machine has a GPU, but TensorFlow cannot use it (a CPU-only TensorFlow, or its "
                    "CUDA libraries missing: pip install 'tensorflow[and-cuda]'); running on the CPU. "
                    "-v shows TensorFlow's own messages")


def visible_gpus() -> int:
    """GPUs TensorFlow can use in this process."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def library_versions() -> dict:
    """Versions of the libraries that shape the numbers, for the record."""
    import platform

    import h5py
    import keras
    import numpy as np
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "h5py": h5py.__version__}
