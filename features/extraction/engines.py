"""The engines that run the embedding pass, behind one protocol, and the one loop that checkpoints it.

An engine yields ``(listing indices, embeddings)`` batches for the rows it is given, in
listing order; :func:`run_engine` is the one loop that shows progress, notes when the
first batch came (the set-up mark) and checkpoints the rows (:class:`features.cache.Checkpoints`).
The local engine decodes with tf.data and embeds in this process; the Ray engine
(:mod:`.ray_cluster`) maps the same decode and the same network over a pool of actors.
Both build the network the same way (:func:`features.models.build.create_embedder`), so
they write the same cache; either runs it in TensorFlow's frozen graph or, converted once,
on ONNX Runtime (:mod:`features.models.onnx`).
"""

from __future__ import annotations

import time
from typing import Iterator, Protocol

import numpy as np

from ..models.registry import Backbone


class Engine(Protocol):
    """What :func:`run_engine` drives."""

    name: str
    backbone: Backbone
    runtime: str  # asked for ("tf", "onnx", "auto"); after prepare, what runs the network ("tf" or "onnx")
    conversion_seconds: float  # converting the network for ONNX Runtime in prepare (0: none, or kept before)

    def prepare(self) -> None:
        """Set-up that does not count as embedding time (the local engine builds its network here, and both
        convert it for ONNX Runtime where their runtime asks for it: :func:`onnx_network`)."""

    def batches(self, indices: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(listing indices, float32 embeddings) of the rows ``indices`` that decoded, in order."""


class LocalEngine:
    """This process, every core: tf.data decodes while the network embeds, in TensorFlow's frozen
    graph or on ONNX Runtime (``runtime``).

    Args:
        headers: the files' headers, read by the caller for the rows to embed (the pixel
            limit's refusals among them).
        runtime: "tf", "onnx", or "auto" (ONNX Runtime where the network converts, else TensorFlow).
        onnx_dir: where converted networks are kept.
    """

    name = "local"

    def __init__(self, source, backbone: Backbone, *, pooling: str, tta: str, seed: int, batch_size: int,
                 headers, runtime: str = "tf", onnx_dir=None):
        self.source, self.backbone, self.pooling, self.tta, self.seed = source, backbone, pooling, tta, seed
        self.batch_size, self.headers, self.model = batch_size, headers, None
        self.runtime, self.onnx_dir, self.onnx, self.conversion_seconds = runtime, onnx_dir, None, 0.0

    def prepare(self) -> None:
        from ..models.build import create_embedder
        from ..models.onnx import OnnxEmbedder

        converted = onnx_network(self)
        if converted is not None:
            self.onnx = OnnxEmbedder(converted)
            return
        self.model = create_embedder(self.backbone, self.pooling, self.tta, self.seed)

    @property
    def runtime_version(self) -> str:
        return _runtime_version(self.runtime)

    def batches(self, indices):
        from ..data import image_batches
        from ..models.build import embedding_function

        size = self.backbone.image_size
        pending = iter(image_batches(self.source, size, self.batch_size, indices, self.headers))  # decoding starts ...
        # ... while the graph is traced and optimised; tf.data decodes the next batch while this one embeds
        embed = self.onnx or embedding_function(self.model, size)
        for batch_index, images in pending:
            yield batch_index.numpy(), np.asarray(embed(images), np.float32)


def _runtime_version(runtime: str) -> str:
    if runtime == "onnx":
        import onnxruntime

        return onnxruntime.__version__
    import tensorflow as tf

    return tf.__version__


def onnx_network(engine):
    """The engine's network converted for ONNX Runtime when its ``runtime`` runs it there (see
    :func:`features.models.onnx.converted_or_none`), else None; sets ``engine.runtime`` to what runs
    and ``engine.conversion_seconds``."""
    from ..models.onnx import converted_or_none

    converted = converted_or_none(engine.backbone, engine.pooling, engine.tta, engine.seed, engine.onnx_dir,
                                  engine.runtime)
    engine.runtime = "onnx" if converted else "tf"
    engine.conversion_seconds = converted.seconds if converted else 0.0
    return converted


class RayEngine:
    """A pool of actors on a Ray cluster (see :mod:`.ray_cluster`); its set-up counts as embedding time."""

    name = "ray"

    def __init__(self, source, backbone: Backbone, *, pooling: str, tta: str, seed: int, batch_size: int,
                 address: str | None = None, runtime: str = "tf", onnx_dir=None):
        self.source, self.backbone, self.pooling, self.tta, self.seed = source, backbone, pooling, tta, seed
        self.batch_size, self.address = batch_size, address
        self.runtime, self.onnx_dir, self.onnx_model, self.conversion_seconds = runtime, onnx_dir, None, 0.0

    def prepare(self) -> None:
        from .ray_cluster import check_source

        check_source(self.source)
        converted = onnx_network(self)  # on the driver, once; each actor gets the model's bytes
        if converted is not None:
            self.onnx_model = converted.model  # the bytes that were proved

    @property
    def runtime_version(self) -> str:
        return _runtime_version(self.runtime)

    def batches(self, indices):
        from .ray_cluster import embed_batches

        return embed_batches(self.source, self.backbone, indices, pooling=self.pooling, seed=self.seed,
                             batch_size=self.batch_size, address=self.address, tta=self.tta,
                             onnx_model=self.onnx_model)


def run_engine(engine: Engine, indices, checkpoints, checkpoint_rows: int, progress: bool, done: int = 0):
    """Embed the rows ``indices`` with ``engine``, checkpointing about every ``checkpoint_rows`` rows.

    Args:
        done: rows embedded before (a resumed run), where the progress bar starts.

    Returns:
        (time of the first batch, its rows), the end of the set-up; None when no row decoded.
    """
    from tqdm.auto import tqdm

    rows, chunks, first, pending = [], [], None, 0
    with tqdm(total=len(indices) + done, initial=done, unit="img", disable=not progress, dynamic_ncols=True,
              desc=engine.backbone.name + ("" if engine.name == "local" else f" ({engine.name})")) as bar:
        for index, embeddings in engine.batches(indices):
            if not len(index):
                continue
            rows.append(index)
            chunks.append(embeddings)
            pending += len(index)
            bar.update(len(index))
            if first is None:
                first = (time.perf_counter(), len(index))
            if pending >= checkpoint_rows:
                checkpoints.write(np.concatenate(rows), np.concatenate(chunks))
                rows, chunks, pending = [], [], 0
        if chunks:
            checkpoints.write(np.concatenate(rows), np.concatenate(chunks))
        bar.update(len(indices) + done - bar.n)  # the undecodable ones, reported after the bar
    return first
