"""A fine-tuning (or from-scratch) run, step by step: settle, build, train, score, record.

:func:`finetune` calls each step once: :func:`~features.train.config.resolve_config`
(every check, before any work), :func:`build`, :func:`fit` (on images, or on the frozen
prefix's cached activations), :func:`score` (and :func:`predict_rows` on validation),
:func:`write_run_files` and :func:`results_row`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from ..data import DataSource, activation_batches, check_source, indexed_batches, labelled_batches
from ..data.corrections import apply_corrections, read_corrections
from ..errors import UsageError
from ..memory import available_memory
from ..outputs import check_output_folder
from ..records import metrics, runs
from ..records.plots import plot_history
from ..records.runs import RunFiles
from ..records.scored import Scored, write_scored
from . import loop
from .config import HEAD_UNITS, TrainConfig, resolve_config
from .model import build_model, frozen_prefix_models, unfrozen_count

log = logging.getLogger(__name__)


def frozen_activations(prefix, source: DataSource, *, indices, image_size: int, batch_size: int,
                       spill_dir, memory_limit: int | None = None, views: tuple | None = None):
    """Run the frozen prefix once over the given rows; with ``views`` (the model's augmentation layer, K), K times,
    each through the augmentation in training mode.

    Activations go to memory, or to a file under ``spill_dir`` (deleted with it) when they
    would take more than ``memory_limit`` bytes (default: half the free memory).

    Returns:
        (rows, activations): the listing indices that decoded, and their activations: (n, *shape), or
        (n, K, *shape) with ``views``.
    """
    import tensorflow as tf

    augment, views = views if views is not None else (None, 1)

    shape = tuple(int(d) for d in prefix.output.shape[1:])
    lead = (len(indices),) if augment is None else (len(indices), views)
    nbytes = int(np.prod(lead)) * int(np.prod(shape)) * 4
    limit = available_memory() // 2 if memory_limit is None else memory_limit
    if nbytes > limit:
        os.makedirs(spill_dir, exist_ok=True)
        path = os.path.join(spill_dir, f"activations-{len(os.listdir(spill_dir))}.f32")
        log.info("frozen activations (%.1f GB) go to %s", nbytes / 1e9, path)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(*lead, *shape))
    else:
        out = np.empty((*lead, *shape), dtype=np.float32)
    from ..models.build import embedding_function

    if augment is None:
        run = embedding_function(prefix, image_size)  # one traced graph: eager calls are 2x slower
    else:
        run = tf.function(lambda images: prefix(augment(images, training=True), training=False))
    rows = None
    for view in range(1 if augment is None else views):
        got, n = [], 0
        for index, images in indexed_batches(source, indices, image_size=image_size, batch_size=batch_size):
            batch = np.asarray(run(images), dtype=np.float32)
            if augment is None:
                out[n:n + len(batch)] = batch
            else:
                out[n:n + len(batch), view] = batch
            got.append(index.numpy())
            n += len(batch)
        got = np.concatenate(got) if got else np.zeros(0, np.int64)
        rows = got if rows is None else rows  # every pass decodes the same rows, in the same order
    return rows, out[:len(rows)]


def _precision_policy(precision: str) -> str:
    """The Keras policy of a checked precision (what the results row records)."""
    if precision == "mixed":
        from ..device import visible_gpus

        # float16 is the GPU's fast type; this CPU family computes bfloat16 natively.
        precision = "fp16" if visible_gpus() else "bf16"
    return {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[precision]


def strategy(config: TrainConfig):
    """The distribution strategy of a run and its replica count.

    "mirrored" is ``tf.distribute.MirroredStrategy`` over this machine's GPUs (one replica
    each), or over its logical CPU devices where it has no GPU and more than one CPU device
    is configured (``tf.config.set_logical_device_configuration``; how it is tested).
    Each replica takes ``batch_size`` images a step, so the global batch is
    ``batch_size`` x replicas. Several machines are not supported: Keras 3's ``fit`` fails
    under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).
    """
    import tensorflow as tf

    if config.distribute == "none":
        return tf.distribute.get_strategy(), 1  # the default strategy: one device
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
        [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = tf.distribute.MirroredStrategy(devices=devices)
    if mirrored.num_replicas_in_sync == 1:
        log.warning("the mirrored strategy found one device (%s): training runs on it alone", devices[0])
    return mirrored, mirrored.num_replicas_in_sync


@dataclass(kw_only=True)
class Built:
    """The model of a run and what was settled while building it."""

    model: object
    network: object  # the backbone network inside ``model`` (its last layers are unfrozen)
    policy: str  # the Keras dtype policy it was built under
    sigmoid: bool  # one sigmoid output for two classes
    global_batch: int  # images a step takes from the data: the config's batch size on each of the replicas


def build(config: TrainConfig, backbone, *, n_classes: int, replicas: int = 1) -> Built:
    """Seed, then build the classifier under the config's precision policy.

    Args:
        replicas: the distribution strategy's replicas, each taking ``config.batch_size`` images a step.
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    policy = _precision_policy(config.precision)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        model, network = build_model(config, backbone, n_classes)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if not config.scratch:
        unfrozen_count(network, config.unfreeze)  # refuse a count over the layers now, not later
    return Built(model=model, network=network, policy=policy, sigmoid=model.output.shape[-1] == 1,
                 global_batch=config.batch_size * replicas)


def _fit_on_activations(built: Built, config: TrainConfig, source: DataSource, rows: dict, *, folder, verbose,
                        deadline):
    """``cache_frozen``: the frozen prefix runs once; the rest trains on its activations."""
    n = unfrozen_count(built.network, config.unfreeze)
    prefix, trainable, suffix = frozen_prefix_models(built.model, built.network, n)
    start = time.perf_counter()
    data = {}
    augment = built.model.get_layer("augment") if config.views > 1 else None
    for split in ("train", "val"):
        index, x = frozen_activations(prefix, source, indices=rows[split], image_size=config.image_size,
                                      batch_size=built.global_batch, spill_dir=folder / "activations",
                                      views=(augment, config.views) if augment is not None and split == "train"
                                      else None)
        y = source.labels[index].astype(np.float32 if built.sigmoid else np.int64)
        data[split] = (x, y[:, None] if built.sigmoid else y)
    cache_seconds = time.perf_counter() - start
    log.info("frozen prefix (%s) ran once over %d images (%d view(s) of each training image) in %.1f s",
             prefix.output.shape[1:], sum(len(d[0]) for d in data.values()), config.views, cache_seconds)
    train_ds = activation_batches(*data["train"], batch_size=built.global_batch, shuffle=True, seed=config.seed,
                                  views=config.views > 1)
    val_ds = activation_batches(*data["val"], batch_size=built.global_batch)
    result = loop.train(trainable, suffix, config, train_ds, val_ds=val_ds, checkpoint_path=folder / "best.weights.h5",
                        verbose=verbose, log_dir=folder / RunFiles.TENSORBOARD, deadline=deadline)
    data.clear()
    shutil.rmtree(folder / "activations", ignore_errors=True)
    for row in result["history"]:
        row["elapsed"] += cache_seconds
    if result["seconds_to_best"] is not None:
        result["seconds_to_best"] += cache_seconds
    result["train_seconds"] += cache_seconds
    result["cache_seconds"] = cache_seconds
    return result


def fit(built: Built, config: TrainConfig, source: DataSource, rows: dict, *, folder, verbose: int = 1,
        started: float | None = None) -> dict:
    """Train on the train rows, choose the best epoch on the val rows; see :func:`loop.train`.

    ``config.time_limit`` counts from ``started`` (a ``time.monotonic()`` moment; default: now).

    Returns:
        :func:`loop.train`'s record plus ``cache_seconds`` (the frozen prefix's pass).
    """
    deadline = None if config.time_limit is None else (started or time.monotonic()) + config.time_limit
    if config.cache_frozen:
        return _fit_on_activations(built, config, source, rows, folder=folder, verbose=verbose, deadline=deadline)
    train_ds = labelled_batches(source, rows["train"], image_size=config.image_size, batch_size=built.global_batch,
                                sigmoid=built.sigmoid,
                                shuffle=True, seed=config.seed)
    val_ds = labelled_batches(source, rows["val"], image_size=config.image_size, batch_size=built.global_batch,
                              sigmoid=built.sigmoid)
    result = loop.train(built.model, built.network, config, train_ds, val_ds=val_ds,
                        checkpoint_path=folder / "best.weights.h5",
                        verbose=verbose, log_dir=folder / RunFiles.TENSORBOARD, deadline=deadline)
    result["cache_seconds"] = 0.0
    return result


def predict_rows(model, config: TrainConfig, *, source: DataSource, rows,
                 batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the rows that decoded, their class probabilities), with the config's test-time augmentation.

    Args:
        batch_size: images per step (default: the config's).
    """
    batches = indexed_batches(source, rows, image_size=config.image_size, batch_size=batch_size or config.batch_size)
    return loop.probabilities(model, batches, config.tta)


def score(model, config: TrainConfig, *, source: DataSource, test_rows,
          batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Score the model once on the test rows (with the config's test-time augmentation).

    Returns:
        (rows, probabilities, scores): the test rows that decoded, their class
        probabilities, and :func:`metrics.score`'s figures.
    """
    index, proba = predict_rows(model, config, source=source, rows=test_rows, batch_size=batch_size)
    if not np.isfinite(proba).all():
        rates = "{scratch_lr}" if config.scratch else "{lr} and {head_lr}"
        raise UsageError(f"training diverged: the model's outputs are NaN or infinite; lower {rates} "
                         f"(now {config.scratch_lr if config.scratch else f'{config.lr:g} and {config.head_lr:g}'})")
    return index, proba, metrics.score(source.labels[index], proba, source.class_names)


def write_model_files(files: RunFiles, built: Built, *, config: TrainConfig, source: DataSource, history: list) -> None:
    """The run folder's model, its history and curves (the best-epoch checkpoint is removed); the scored files
    are :meth:`RunFiles.write_scored`'s."""
    built.model.save(files / RunFiles.MODEL)
    if (files / "best.weights.h5").exists():
        os.remove(files / "best.weights.h5")
    files.write_history(history)
    plot_history(files / RunFiles.CURVES, history, f"{config.method}: {config.backbone} on {source.name}")


def settings(config: TrainConfig, source: DataSource, policy: str) -> dict:
    """The resolved configuration, saved beside the results (config.json)."""
    return {**dataclasses.asdict(config), "policy": policy, "dataset": source.name,
            "source": source.location, "class_names": source.class_names,
            "split_origin": source.split_origin, "fingerprint": source.fingerprint}


def results_row(config: TrainConfig, source: DataSource, *, result: dict, scores: dict, rows: dict, n_test: int,
                policy: str, run_dir) -> dict:
    """The run's row of the results table."""
    epochs = len(result["history"])
    return {
        "dataset": source.name, "backbone": config.backbone, "image_size": config.image_size,
        "method": config.method, "head": f"dense{HEAD_UNITS}",
        "unfrozen_layers": result["unfrozen"], "unfrozen_what": result.get("unfrozen_what"), "epochs_run": epochs,
        "best_epoch": result["best_epoch"],
        **{k: scores[k] for k in metrics.SUMMARY_KEYS}, "per_class": scores["per_class"],
        "train_seconds": result["train_seconds"],
        "seconds_per_epoch": sum(h["seconds"] for h in result["history"]) / epochs if epochs else None,
        "cache_frozen": config.cache_frozen, "cache_seconds": result["cache_seconds"], "views": config.views,
        "seconds_to_best": result["seconds_to_best"], "total_seconds": result["train_seconds"],
        "augment": config.augment, "label_smoothing": config.label_smoothing,
        "tta": config.tta, "schedule": config.schedule, "weight_decay": config.weight_decay,
        "time_limit": config.time_limit, "stopped_by_time": result.get("stopped_by_time", False),
        "unfreeze": config.unfreeze, "lr": config.scratch_lr if config.scratch else config.lr,
        "train_per_class": config.train_per_class, "precision": policy,
        "n_train": int(len(rows["train"])), "n_val": int(len(rows["val"])), "n_test": int(n_test),
        "run_dir": str(run_dir),
    }


def finetune(source: DataSource, config: TrainConfig, *, out_dir="runs", verbose: int = 1,
             corrections=None) -> dict:
    """Train the course's model on ``source``'s train split and score it on its test split.

    Writes a run folder (model.keras, history.csv, curves.png, metrics.json, config.json,
    report.txt, confusion.png, predictions.csv) and appends a row to the results table.

    Args:
        corrections: the path of a corrections file (:mod:`features.data.corrections`), applied to the listing
            first; the run records them, and the test accuracy on the uncorrected test split.

    Returns:
        The results-table row plus "metrics".
    """
    started = time.monotonic()  # config.time_limit counts from here
    check_source(source)
    original, applied = source, None
    if corrections is not None:
        corrections = read_corrections(corrections)
        applied = apply_corrections(corrections, ids=source.ids, labels=source.labels, class_names=source.class_names,
                                    photo_root=source.location if source.kind == "folder" else None)
        source = dataclasses.replace(source, labels=applied.labels, splits=applied.splits(source.splits))
    config, backbone = resolve_config(config, source)
    check_output_folder(out_dir)
    distribution, replicas = strategy(config)
    with distribution.scope():  # variables, optimizers and every compile of the phases: mirrored
        built = build(config, backbone, n_classes=len(source.class_names), replicas=replicas)
        rows = {name: source.rows(name) for name in ("train", "val", "test")}
        if config.train_per_class:
            from ..data.splits import subsample

            train = rows["train"]
            rows["train"] = train[subsample(source.labels[train], config.train_per_class, config.seed)]
        with runs.run_folder(out_dir, source.name, config.backbone, config.method) as run:
            result = fit(built, config, source, rows, folder=run.path, verbose=verbose, started=started)
            index, proba, scores = score(built.model, config, source=source, test_rows=rows["test"],
                                         batch_size=built.global_batch)
            v_index, v_proba = predict_rows(built.model, config, source=source, rows=rows["val"],
                                            batch_size=built.global_batch)
            val_accuracy = metrics.accuracy(source.labels[v_index], v_proba) if len(v_index) else None
            if applied is not None:  # the removed test photos scored too: the uncorrected test split's accuracy
                gone = original.rows("test")[~applied.keep[original.rows("test")]]
                g_index, g_proba = predict_rows(built.model, config, source=original, rows=gone,
                                                batch_size=built.global_batch) if len(gone) else \
                    (np.zeros(0, np.int64), np.zeros((0, len(source.class_names))))
                every = np.concatenate([index, g_index])
                applied = applied.with_uncorrected(
                    accuracy=metrics.accuracy(original.labels[every], np.vstack([proba, g_proba])) if len(every)
                    else None, n_test=len(every))
            write_model_files(run.files, built, config=config, source=source, history=result["history"])
            saved = {**settings(config, source, built.policy), "replicas": replicas,
                     "global_batch_size": built.global_batch}
            row = {**results_row(config, source, result=result, scores=scores, rows=rows, n_test=len(index),
                                 policy=built.policy, run_dir=run.final),
                   "distribute": config.distribute, "replicas": replicas,
                   "global_batch_size": built.global_batch, "val_accuracy": val_accuracy,
                   **({"corrections": applied.record} if applied is not None else {})}
            write_scored(run.files, Scored(
                class_names=source.class_names, scores=scores, config=saved,
                test=([source.ids[i] for i in index], source.labels[index], proba),
                val=([source.ids[i] for i in v_index], source.labels[v_index], v_proba),
                title=f"{config.method} {config.backbone}: accuracy {scores['accuracy']:.4f}",
                photo_root=source.location if source.kind == "folder" else None,
                record={**row, "metrics": scores, "config": saved}))
    runs.append_result(out_dir, row)
    return {**row, "metrics": scores}
