"""The Ray engine's cluster side: joining or starting Ray, the actor pool, and each actor.

The driver lists the dataset and makes the split exactly as the local engine does; Ray
Data then maps batches of (listing index, path) through a pool of actors
(``map_batches`` with ``compute=ActorPoolStrategy``). Each actor builds the backbone once,
from the registry (a model is never pickled, and :func:`features.models.build.create_embedder`
builds the same network the local engine does), and decodes and embeds with the local
engine's own functions (:func:`features.data.decode_paths`,
:func:`features.models.build.embedding_function`), so the cache is the same: same ids,
labels, splits and row order, embeddings equal within float tolerance. Results come back
in listing order (Ray Data's ``preserve_order``) and each carries its listing index; the
driver streams them through the same checkpoint loop as the local engine
(:func:`features.extraction.engines.run_engine`), so an interrupted run resumes, the
writers' lock holds, the checksum is the same.

Actors: one per GPU (``num_gpus=1``) where the cluster has GPUs; on CPUs, one per node
with a fraction of its CPUs, never all of them (measured: two 1-CPU actors on a 2-CPU
machine deadlocked, Ray Data's own tasks never getting a CPU), its TensorFlow thread pool
sized to the node's cores. Ray restarts an actor whose process dies and retries its
batch (Ray Data's defaults: ``max_restarts=-1``, ``max_task_retries=-1``).

Paths must be readable from every node at the same path (a shared mount such as NFS): an
actor that cannot see a file fails the run with a message naming the file and the node.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile

import numpy as np

from ..errors import DatasetUnavailableError, UsageError

log = logging.getLogger(__name__)

INSTALL = "pip install -r requirements-distributed.txt"
CONNECT_TIMEOUT = 5.0


def _ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise UsageError(f"{{engine=ray}} needs Ray, which is not installed: run '{INSTALL}' "
                         "(or pip install 'ray[data]')") from None
    return ray


# What an HTTP/2 client sends first: the connection preface, then an empty SETTINGS frame.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _reachable(address: str, default_port: int) -> bool:
    """Whether a Ray service answers at ``address``: Ray's GCS and client server speak gRPC, so an
    HTTP/2 preface is answered by a SETTINGS frame (type 4). A web server, a database or anything else
    that merely accepts the connection is not taken for Ray (joining it hung for minutes, deaf to Ctrl-C)."""
    host, _, port = address.rpartition(":") if ":" in address else (address, "", str(default_port))
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or default_port)), timeout=CONNECT_TIMEOUT) as s:
            s.settimeout(CONNECT_TIMEOUT)
            s.sendall(_HTTP2_PREFACE)
            reply = b""
            while len(reply) < 9:
                block = s.recv(9 - len(reply))
                if not block:
                    break
                reply += block
    except (OSError, ValueError):
        return False
    return len(reply) == 9 and reply[3] == 4  # a frame header whose type is SETTINGS


def connect(address: str | None = None, temp_dir: str | None = None) -> None:
    """Join the Ray cluster at ``address``, or start a local Ray when it is None.

    Args:
        address: None or "local" (a Ray of this machine, started here), "auto" (the
            cluster this node belongs to: ``ray start --head`` ran here or
            ``ray start --address HEAD:6379``), ``HOST:PORT`` of a head node, or a
            ``ray://HOST:10001`` client address.
        temp_dir: Ray's files for a local Ray (default ``/tmp/ray``); kept out of the
            repository and the home folder.

    Raises:
        UsageError: Ray is not installed.
        DatasetUnavailableError: no cluster answers at ``address``; says how to start one.
    """
    from ..device import verbose

    quiet_native = not verbose()  # -v: Ray's own messages too
    if quiet_native:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray = _ray()
    if ray.is_initialized():
        return
    from contextlib import nullcontext

    from ..device import native_stderr_silenced

    with native_stderr_silenced() if quiet_native else nullcontext():
        _init(ray, address, temp_dir)


def cluster_gpus(address: str | None = None, temp_dir: str | None = None) -> int:
    """GPUs of the cluster at ``address`` (joining it, or starting a local Ray; see :func:`connect`)."""
    connect(address, temp_dir)
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def _quiet_ray_data() -> None:
    """Ray Data's executor logs each plan at INFO; the toolkit's progress bar says what matters."""
    from ..device import verbose

    if verbose():
        return
    try:  # Ray Data re-applies its logging config for each dataset: raise the console's level in it
        from ray.data._internal import logging as ray_data_logging

        ray_data_logging.DEFAULT_CONFIG["handlers"]["console"]["level"] = "ERROR"  # the log file keeps all
        ray_data_logging.configure_logging()
    except (ImportError, AttributeError, KeyError, TypeError):  # another Ray version: its messages show
        pass


def _init(ray, address, temp_dir) -> None:
    how = ("start one with 'ray start --head' on this machine (then use 'auto'), or leave "
           "{ray_address} out to run a local Ray")
    quiet = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
    local = address in (None, "", "local")
    if address and address.startswith("ray://"):
        if not _reachable(address[len("ray://"):], 10001):
            raise DatasetUnavailableError(f"{{ray_address}} {address}: no Ray client server answers there; {how}")
        quiet = {"log_to_driver": False}
    elif not local and address != "auto" and not _reachable(address, 6379):
        raise DatasetUnavailableError(f"{{ray_address}} {address}: no Ray cluster answers there; {how}")
    temp_dir = temp_dir or os.path.join(tempfile.gettempdir(), "ray")
    home = os.path.expanduser("~")
    if local and not os.access(os.path.join(home, ".ray") if os.path.isdir(os.path.join(home, ".ray")) else home,
                               os.W_OK):
        raise DatasetUnavailableError(f"a local Ray writes its token under {home}/.ray, and HOME ({home}) is not "
                                      "writable: set HOME to a folder you can write to, or make it writable")
    try:
        if local:
            ray.init(_temp_dir=temp_dir, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
        what = "could not start a local Ray" if local else f"{{ray_address}} {address}: cannot join a Ray cluster"
        raise DatasetUnavailableError(f"{what} ({(str(exc).splitlines() or [type(exc).__name__])[0][:200]}); "
                                      f"{f'its logs are under {temp_dir}' if local else how}") from None


def plan(resources: dict, nodes: list[dict]) -> dict:
    """How many actors, and what each asks for, on these cluster resources.

    Returns:
        ``actors`` (pool size), ``num_cpus`` and ``num_gpus`` per actor, ``threads``
        (TensorFlow's intra-op threads in each actor; 0 leaves TensorFlow's own choice).
    """
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return {"actors": gpus, "num_cpus": 1.0, "num_gpus": 1, "threads": 0}
    alive = [n for n in nodes if n.get("Alive", True) and n.get("Resources", {}).get("CPU", 0) > 0]
    per_node = [n["Resources"]["CPU"] for n in alive] or [resources.get("CPU", 1)]
    smallest = min(per_node)
    # Half the node's CPUs (at least 0.5): the rest stay free for Ray Data's own tasks.
    return {"actors": len(per_node), "num_cpus": max(0.5, smallest / 2), "num_gpus": 0,
            "threads": int(smallest)}


class Embedder:
    """One actor of the pool: builds the backbone once, then decodes and embeds batches of paths."""

    def __init__(self, backbone: str, *, image_size: int, weights: str, pooling: str, seed: int,
                 max_pixels: int | None, threads: int = 0, tta: str = "none", onnx_model: bytes | None = None,
                 runtime: str = "onnx", precision: str = "fp32"):
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        from ..models.registry import resolve_backbone

        spec = resolve_backbone(backbone, image_size, weights)
        self.size, self.max_pixels, self.width = image_size, max_pixels, spec.spec.width
        self.threads = threads or None  # decoding threads: the node's cores, as the local engine's tf.data
        if onnx_model is not None:  # converted once by the driver; the runtime's threads: the actor's share
            from ..models.runtime import Choice, embedder

            self.embed = embedder(onnx_model, Choice(runtime, precision), width=self.width or None,
                                  threads=threads or None)
            return
        from ..models.build import create_embedder, embedding_function

        model = create_embedder(spec, pooling, tta=tta, seed=seed)
        self.width = int(model.output.shape[-1])
        self.embed = embedding_function(model, image_size)

    def __call__(self, batch: dict) -> dict:
        from ..data import decode_paths

        paths = [str(p) for p in batch["path"]]
        missing = [p for p in paths if not os.path.lexists(p)]
        if missing:
            raise FileNotFoundError(
                f"node {socket.gethostname()} cannot read {missing[0]} (no such file there); on a cluster every "
                "node must read the images at the same path, from a shared mount such as NFS")
        rows, images, _ = decode_paths(paths, self.size, max_pixels=self.max_pixels, threads=self.threads)
        embeddings = np.asarray(self.embed(images), np.float32) if len(rows) else np.zeros((0, self.width),
                                                                                          np.float32)
        return {"index": np.asarray(batch["index"], np.int64)[rows], "embedding": embeddings}


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for line in reversed(text.splitlines()):
        if "cannot read" in line or "Error" in line:
            return line.strip()[:400]
    return (text.splitlines() or [type(exc).__name__])[-1][:400]


def check_source(source) -> None:
    """Raises UsageError for a TFDS source: its records are read by TensorFlow in one process."""
    if source.kind != "folder":
        raise UsageError("{engine=ray} reads image folders ({data_dir}); a TFDS set is read in one process: "
                         "use the local engine, or export it to a folder")


def embed_batches(engine, indices, *, temp_dir: str | None = None):
    """(listing indices, embeddings) of the rows ``indices`` of the engine's source, embedded on Ray, in listing
    order. ``engine``: the :class:`~features.extraction.engines.RayEngine` (its source, backbone, pooling, TTA,
    seed, batch size, cluster address, and the network the driver converted and proved, or None).

    Raises:
        UsageError: a TFDS source.
        DatasetUnavailableError: no cluster, or a worker could not read a path.
    """
    source, backbone, choice, onnx_model = engine.source, engine.backbone, engine.choice, engine.onnx_model
    check_source(source)
    connect(engine.address, temp_dir)
    import ray

    setup = plan(ray.cluster_resources(), ray.nodes())
    log.info("Ray engine: %d actor(s), %s CPU and %s GPU each", setup["actors"], setup["num_cpus"],
             setup["num_gpus"])
    _quiet_ray_data()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows reach the checkpoints in listing order
    context.enable_progress_bars = False
    paths = source.paths()
    items = [{"index": int(i), "path": paths[i]} for i in indices]
    dataset = ray.data.from_items(items).map_batches(
        Embedder, batch_size=engine.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=setup["actors"]),
        num_cpus=setup["num_cpus"], num_gpus=setup["num_gpus"] or None,
        fn_constructor_kwargs={"backbone": backbone.name, "image_size": backbone.image_size,
                               "weights": backbone.weights, "pooling": engine.pooling, "seed": engine.seed,
                               "max_pixels": source.max_pixels, "threads": setup["threads"],
                               "tta": engine.tta, "onnx_model": onnx_model,
                               "runtime": choice.runtime, "precision": choice.precision})
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield np.asarray(batch["index"], np.int64), np.asarray(batch["embedding"], np.float32)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayError) as exc:
        raise DatasetUnavailableError(f"the Ray engine stopped: {_reason(exc)}") from None
