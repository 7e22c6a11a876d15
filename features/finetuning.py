"""A fine-tuning (or from-scratch) run: data, training, scoring on the test split, records."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

import numpy as np

from . import metrics, runs, training
from .backbones import get_spec, resolve_image_size
from .data import SPLITS, DataSource, decoded_images, fixed_threads
from .errors import UsageError

log = logging.getLogger(__name__)


def _rounded(ds):
    """Images as the cache keeps them (uint8), so train, val and test see the same pixels."""
    import tensorflow as tf

    def to_uint8(i, image):
        return i, tf.cast(tf.round(image), tf.uint8)

    return ds.map(to_uint8)


def labelled_batches(source: DataSource, indices, image_size: int, batch_size: int, sigmoid: bool,
                     shuffle: bool = False, seed: int = 0):
    """(image, label) batches of the given rows; decoded once, then kept in memory.

    The decoded, resized images are cached by the pipeline (uint8, ~150 KB an image at
    224 px), so epochs after the first do not decode JPEGs again.
    """
    import tensorflow as tf

    labels = tf.constant(source.labels.astype(np.float32 if sigmoid else np.int64))
    ds = _rounded(decoded_images(source, image_size, indices)).cache()
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)

    def pair(i, image):
        label = tf.gather(labels, i)
        return tf.cast(image, tf.float32), (label[None] if sigmoid else label)

    return fixed_threads(ds.map(pair).batch(batch_size).prefetch(2))


def indexed_batches(source: DataSource, indices, image_size: int, batch_size: int):
    """(index, image) batches in listing order, for scoring."""
    import tensorflow as tf

    def to_float(i, image):
        return i, tf.cast(image, tf.float32)

    ds = _rounded(decoded_images(source, image_size, indices)).map(to_float)
    return fixed_threads(ds.batch(batch_size).prefetch(2))


def _free_memory() -> int:
    """Bytes of memory available without swapping (Linux's MemAvailable counts reclaimable cache)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # neither: assume 4 GB
        return 4 << 30


def frozen_activations(prefix, source: DataSource, indices, image_size: int, batch_size: int,
                       spill_dir, memory_limit: int | None = None):
    """Run the frozen prefix once over the given rows.

    Activations go to memory, or to a file under ``spill_dir`` (deleted with it) when they
    would take more than ``memory_limit`` bytes (default: half the free memory).

    Returns:
        (rows, activations): the listing indices that decoded, and their activations.
    """
    shape = tuple(int(d) for d in prefix.output.shape[1:])
    nbytes = len(indices) * int(np.prod(shape)) * 4
    limit = _free_memory() // 2 if memory_limit is None else memory_limit
    if nbytes > limit:
        os.makedirs(spill_dir, exist_ok=True)
        path = os.path.join(spill_dir, f"activations-{len(os.listdir(spill_dir))}.f32")
        log.info("frozen activations (%.1f GB) go to %s", nbytes / 1e9, path)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(indices), *shape))
    else:
        out = np.empty((len(indices), *shape), dtype=np.float32)
    from .extraction import embedding_function

    run = embedding_function(prefix, image_size)  # one traced graph: eager calls are 2x slower
    rows, n = [], 0
    for index, images in indexed_batches(source, indices, image_size, batch_size):
        batch = np.asarray(run(images), dtype=np.float32)
        out[n:n + len(batch)] = batch
        rows.append(index.numpy())
        n += len(batch)
    return (np.concatenate(rows) if rows else np.zeros(0, np.int64)), out[:n]


def activation_batches(activations, labels, batch_size: int, shuffle: bool = False, seed: int = 0):
    """(activations, label) batches from an array (or memory-mapped file) of activations."""
    import tensorflow as tf

    n, shape = len(activations), activations.shape[1:]
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)

    def gather(idx):
        return activations[idx], labels[idx]

    def load(idx):
        x, y = tf.numpy_function(gather, [idx], (tf.float32, tf.as_dtype(labels.dtype)))
        x.set_shape((None, *shape))
        y.set_shape((None, *labels.shape[1:]))
        return x, y

    return fixed_threads(ds.batch(batch_size).map(load).prefetch(2))


def resolve_config(config: training.TrainConfig, source: DataSource) -> training.TrainConfig:
    """Check the settings against the dataset before any work; fill in defaults.

    Raises:
        UsageError: a setting that cannot apply (see the messages).
    """
    spec = get_spec(config.backbone)
    size = resolve_image_size(spec.name, config.image_size)
    n_classes = len(source.class_names)
    if n_classes < 2:
        raise UsageError(f"{source.name} has one class; a classifier needs at least two")
    binary = config.binary_output
    if binary is not None and n_classes != 2:
        raise UsageError(f"--binary-output {binary} applies to two classes; {source.name} has {n_classes}")
    for flag, value, low in (("--epochs", config.epochs, 1), ("--head-epochs", config.head_epochs, 0),
                             ("--batch-size", config.batch_size, 1), ("--patience", config.patience, 1)):
        if value < low:
            raise UsageError(f"{flag} {value}: must be at least {low}")
    for flag, value in (("--lr", config.lr), ("--head-lr", config.head_lr), ("--scratch-lr", config.scratch_lr)):
        if not value > 0:
            raise UsageError(f"{flag} {value}: must be above zero")
    if config.precision not in ("float32", "mixed"):
        raise UsageError(f"--precision {config.precision}: choose float32 or mixed")
    if config.cache_frozen and config.scratch:
        raise UsageError("--cache-frozen applies to a pretrained base; from scratch every layer trains")
    if config.cache_frozen and config.augment:
        raise UsageError("--cache-frozen needs --no-augment: augmented images change every epoch, "
                         "so the frozen layers' output cannot be computed once")
    if config.cache_frozen and config.unfreeze == "all":
        raise UsageError("--cache-frozen with --unfreeze all: no layer is frozen, so nothing can be cached")
    counts = source.split_counts()
    for split in ("train", "val", "test"):
        if counts[split] == 0:
            raise UsageError(f"{source.name} has no {split} images with this --split; give every split a share")
    return dataclasses.replace(config, backbone=spec.name, image_size=size, binary_output=binary or "sigmoid",
                               unfreeze=training.parse_unfreeze(str(config.unfreeze)))


def _precision_policy(precision: str) -> str:
    if precision == "float32":
        return "float32"
    import tensorflow as tf

    # float16 is the GPU's fast type; this CPU family computes bfloat16 natively.
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def _train_on_activations(model, network, config, source, rows, sigmoid, folder, verbose):
    """``--cache-frozen``: the frozen prefix runs once; the rest trains on its activations."""
    import time

    n = training.unfrozen_count(network, config.unfreeze)
    prefix, trainable, suffix = training.frozen_prefix_models(model, network, n)
    start = time.perf_counter()
    data = {}
    for split in ("train", "val"):
        index, x = frozen_activations(prefix, source, rows[split], config.image_size, config.batch_size,
                                      folder / "activations")
        y = source.labels[index].astype(np.float32 if sigmoid else np.int64)
        data[split] = (x, y[:, None] if sigmoid else y)
    cache_seconds = time.perf_counter() - start
    log.info("frozen prefix (%s) ran once over %d images in %.1f s", prefix.output.shape[1:],
             sum(len(d[0]) for d in data.values()), cache_seconds)
    train_ds = activation_batches(*data["train"], config.batch_size, shuffle=True, seed=config.seed)
    val_ds = activation_batches(*data["val"], config.batch_size)
    result = training.train(trainable, suffix, config, train_ds, val_ds, folder / "best.weights.h5", verbose)
    data.clear()
    shutil.rmtree(folder / "activations", ignore_errors=True)
    for row in result["history"]:
        row["elapsed"] += cache_seconds
    if result["seconds_to_best"] is not None:
        result["seconds_to_best"] += cache_seconds
    result["train_seconds"] += cache_seconds
    result["cache_seconds"] = cache_seconds
    return result


def finetune(source: DataSource, config: training.TrainConfig, out_dir="runs", verbose: int = 1) -> dict:
    """Train the course's model on ``source``'s train split and score it on its test split.

    Writes a run folder (model.keras, history.csv, curves.png, metrics.json, config.json,
    report.txt, confusion.png, predictions.csv) and appends a row to the results table.

    Returns:
        The results-table row plus "metrics".
    """
    import keras

    config = resolve_config(config, source)
    keras.utils.set_random_seed(config.seed)
    policy = _precision_policy(config.precision)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        model, network = training.build_model(config, len(source.class_names), config.image_size)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if not config.scratch:
        training.unfrozen_count(network, config.unfreeze)  # refuse a count over the layers now, not later
    sigmoid = model.output.shape[-1] == 1
    rows = {name: np.flatnonzero(source.splits == i) for i, name in enumerate(SPLITS)}
    parts = [source.name, config.backbone, config.method]
    with runs.run_folder(out_dir, *parts) as run:
        if config.cache_frozen:
            result = _train_on_activations(model, network, config, source, rows, sigmoid, run.path, verbose)
        else:
            train_ds = labelled_batches(source, rows["train"], config.image_size, config.batch_size, sigmoid,
                                        shuffle=True, seed=config.seed)
            val_ds = labelled_batches(source, rows["val"], config.image_size, config.batch_size, sigmoid)
            result = training.train(model, network, config, train_ds, val_ds,
                                    run.path / "best.weights.h5", verbose=verbose)
            result["cache_seconds"] = 0.0
        index, proba = training.probabilities(model, indexed_batches(source, rows["test"], config.image_size,
                                                                     config.batch_size))
        y_test = source.labels[index]
        scores = metrics.score(y_test, proba, source.class_names)
        model.save(run.path / "model.keras")
        if (run.path / "best.weights.h5").exists():
            os.remove(run.path / "best.weights.h5")
        training.write_history(run.path / "history.csv", result["history"])
        training.plot_history(run.path / "curves.png", result["history"],
                              f"{config.method}: {config.backbone} on {source.name}")
        metrics.plot_confusion(scores["confusion_matrix"], source.class_names, run.path / "confusion.png",
                               f"{config.method} {config.backbone}: accuracy {scores['accuracy']:.4f}")
        (run.path / "report.txt").write_text(metrics.report_text(y_test, proba, source.class_names))
        metrics.write_predictions(run.path / "predictions.csv", [source.ids[i] for i in index], y_test, proba,
                                  source.class_names)
        epochs = len(result["history"])
        settings = {**dataclasses.asdict(config), "policy": policy, "dataset": source.name,
                    "source": source.location, "class_names": source.class_names,
                    "split_origin": source.split_origin, "fingerprint": source.fingerprint}
        row = {
            "dataset": source.name, "backbone": config.backbone, "image_size": config.image_size,
            "method": config.method, "head": f"dense{training.HEAD_UNITS}",
            "unfrozen_layers": result["unfrozen"], "epochs_run": epochs, "best_epoch": result["best_epoch"],
            **{k: scores[k] for k in metrics.SUMMARY_KEYS}, "per_class": scores["per_class"],
            "train_seconds": result["train_seconds"],
            "seconds_per_epoch": sum(h["seconds"] for h in result["history"]) / epochs if epochs else None,
            "cache_frozen": config.cache_frozen, "cache_seconds": result["cache_seconds"],
            "seconds_to_best": result["seconds_to_best"], "total_seconds": result["train_seconds"],
            "augment": config.augment, "precision": policy,
            "n_train": int(len(rows["train"])), "n_val": int(len(rows["val"])), "n_test": int(len(y_test)),
            "run_dir": str(run.final),
        }
        runs.write_json(run.path / "config.json", settings)
        runs.write_json(run.path / "metrics.json", {**row, "metrics": scores, "config": settings})
    runs.append_result(out_dir, row)
    return {**row, "metrics": scores}
