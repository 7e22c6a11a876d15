"""The engines that run the embedding pass, behind one protocol, and the one loop that checkpoints it.

An engine yields ``(listing indices, embeddings)`` batches for the rows it is given, in
listing order; :func:`run_engine` is the one loop that shows progress, notes when the
first batch came (the set-up mark) and checkpoints the rows (:class:`features.cache.Checkpoints`).
The local engine decodes with tf.data and embeds in this process; the Ray engine
(:mod:`.ray_cluster`) maps the same decode and the same network over a pool of actors.
Both build the network the same way (:func:`features.models.build.create_embedder`), so
they write the same cache; either runs it in TensorFlow's frozen graph or, converted once,
on ONNX Runtime or OpenVINO, at the precision chosen (:mod:`features.models.runtime`).
"""

from __future__ import annotations

import time
from typing import Iterator, Protocol

import numpy as np

from ..models.registry import Backbone
from ..models.runtime import Choice, Prepared, prepare, version
from .settings import ExtractSettings

TENSORFLOW = Choice("tf")  # an engine's network unless told otherwise


class Engine(Protocol):
    """What :func:`run_engine` drives."""

    name: str
    backbone: Backbone
    runtime: str  # after prepare, what runs the network: "tf", "onnx" or "openvino"
    precision: str  # "fp32" or "bf16"
    conversion_seconds: float  # converting the network to ONNX in prepare (0: none, or kept before)

    def prepare(self) -> None:
        """Set-up that does not count as embedding time (the local engine builds its network here, and both
        convert it where their runtime reads it: :func:`features.models.runtime.prepare`)."""

    def batches(self, indices: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(listing indices, float32 embeddings) of the rows ``indices`` that decoded, in order."""


class _Network:
    """What both engines share: the runtime and precision chosen, and the network prepared on them."""

    def __init__(self, source, settings: ExtractSettings, *, batch_size: int, network=TENSORFLOW):
        self.source, self.backbone, self.pooling, self.tta = source, settings.backbone, settings.pooling, settings.tta
        self.seed, self.batch_size = source.seed, batch_size
        self.prepared = network if isinstance(network, Prepared) else None
        self.choice = self.prepared.choice if self.prepared else network
        self.asked, self.onnx_dir = settings.runtime, settings.out_dir / "onnx"
        self.conversion_seconds, self.compile_seconds = 0.0, 0.0

    def _prepare(self, build: bool) -> Prepared:
        if self.prepared is None:
            self.prepared = prepare(self.backbone, self.choice, pooling=self.pooling, tta=self.tta,
                                             seed=self.seed, folder=self.onnx_dir, asked=self.asked, build=build)
        self.choice, self.conversion_seconds = self.prepared.choice, self.prepared.seconds
        self.compile_seconds = self.prepared.compile_seconds
        return self.prepared

    @property
    def runtime(self) -> str:
        return self.choice.runtime

    @property
    def precision(self) -> str:
        return self.choice.precision

    @property
    def runtime_version(self) -> str:
        return version(self.runtime)


class LocalEngine(_Network):
    """This process, every core: tf.data decodes while the network embeds, in TensorFlow's frozen
    graph, on ONNX Runtime or on OpenVINO.

    Args:
        headers: the files' headers, read by the caller for the rows to embed (the pixel
            limit's refusals among them).
        network: the :class:`~features.models.runtime.Choice` of runtime and precision, or the network
            already :class:`~features.models.runtime.Prepared`.
        asked: the runtime as the user gave it ("auto" falls back where the chosen one cannot run it).
        onnx_dir: where converted networks are kept.
    """

    name = "local"

    def __init__(self, source, settings: ExtractSettings, *, batch_size: int, headers, network=TENSORFLOW):
        super().__init__(source, settings, batch_size=batch_size, network=network)
        self.headers, self.model, self.embed = headers, None, None

    def prepare(self) -> None:
        from ..models.build import create_embedder

        self.embed = self._prepare(build=True).embed
        if self.embed is None:
            self.model = create_embedder(self.backbone, self.pooling, tta=self.tta, seed=self.seed)

    def batches(self, indices):
        from ..data import image_batches
        from ..models.build import embedding_function

        size = self.backbone.image_size
        pending = iter(image_batches(self.source, size, batch_size=self.batch_size, indices=indices,
                                     headers=self.headers))  # decoding starts ...
        # ... while the graph is traced and optimised; tf.data decodes the next batch while this one embeds
        embed = self.embed or embedding_function(self.model, size)
        for batch_index, images in pending:
            yield batch_index.numpy(), np.asarray(embed(images), np.float32)


class RayEngine(_Network):
    """A pool of actors on a Ray cluster (see :mod:`.ray_cluster`); its set-up counts as embedding time.
    The network is converted and proved on the driver, once; each actor compiles the proved bytes."""

    name = "ray"

    def __init__(self, source, settings: ExtractSettings, *, batch_size: int, network=TENSORFLOW):
        super().__init__(source, settings, batch_size=batch_size, network=network)
        self.address, self.onnx_model = settings.ray_address, None

    def prepare(self) -> None:
        from .ray_cluster import check_source

        check_source(self.source)
        converted = self._prepare(build=False).converted
        self.onnx_model = converted.model if converted is not None else None  # the bytes that were proved

    def batches(self, indices):
        from .ray_cluster import embed_batches

        return embed_batches(self, indices)


def run_engine(engine: Engine, indices, *, checkpoints, checkpoint_rows: int, progress: bool, done: int = 0):
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
