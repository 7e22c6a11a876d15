"""The training loop: the phases of a run (the head on a frozen base, then the last layers
unfrozen; or everything from scratch), each epoch timed, the best weights kept."""

from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager

import keras
import numpy as np

from ..errors import DiskFullError, UsageError, is_disk_full
from .config import TrainConfig
from .model import compile_model, set_trainable, unfrozen_words


def phase_rate(lr: float, epoch: int, *, epochs: int, schedule: str = "constant", warmup: int = 0) -> float:
    """The learning rate of epoch ``epoch`` (0-based) of a phase of ``epochs`` epochs.

    A linear warm-up over the first ``warmup`` epochs (lr x (epoch + 1) / (warmup + 1)),
    then ``lr`` ("constant") or a cosine decay from ``lr`` towards 0 over the epochs left
    ("cosine": lr x (1 + cos(pi x t / T)) / 2, t counting from the end of the warm-up).
    """
    import math

    if epoch < warmup:
        return lr * (epoch + 1) / (warmup + 1)
    if schedule == "constant":
        return lr
    t, total = epoch - warmup, max(1, epochs - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * t / total))


def probabilities(model, dataset, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """(row indices, class probabilities) of a dataset of (index, image) batches.

    With ``tta`` "flip", each image's probabilities are the mean of its own and its
    left-right mirror's.
    """
    rows, probs = [], []
    for index, images in dataset:
        p = np.asarray(model(images, training=False), dtype=np.float64)
        if tta == "flip":
            p = (p + np.asarray(model(keras.ops.flip(images, axis=2), training=False), dtype=np.float64)) / 2
        if p.shape[1] == 1:  # one sigmoid neuron: P(class 1)
            p = np.hstack([1 - p, p])
        rows.append(index.numpy())
        probs.append(p)
    return np.concatenate(rows), np.vstack(probs)


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall-clock seconds and metrics into ``log``."""

    def __init__(self, phase: str, log: list, start: float):
        super().__init__()
        self.phase, self.log, self.start = phase, log, start

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs = logs or {}
        acc = next((v for k, v in logs.items() if k.endswith("accuracy") and not k.startswith("val_")), None)
        val_acc = next((v for k, v in logs.items() if k.startswith("val_") and k.endswith("accuracy")), None)
        self.log.append({"epoch": len(self.log) + 1, "phase": self.phase, "seconds": now - self._t,
                         "elapsed": now - self.start, "loss": logs.get("loss"), "accuracy": acc,
                         "val_loss": logs.get("val_loss"), "val_accuracy": val_acc})


class Deadline(keras.callbacks.Callback):
    """Ends training at ``deadline`` (a ``time.monotonic()`` moment): an epoch that would end past it, judged by
    the last epoch's length, is not begun; one running past it stops at its next batch (Keras still scores it on
    validation, so the checkpoint may take it). ``stopped`` is set when it did."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline, self.stopped, self._last = deadline, False, 0.0

    def too_late(self) -> bool:
        """Whether an epoch begun now would end past the deadline (as long as the last one)."""
        return time.monotonic() + self._last > self.deadline

    def _stop(self) -> None:
        self.model.stop_training, self.stopped = True, True

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() >= self.deadline:
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._last = time.monotonic() - self._t
        if self.too_late():
            self._stop()


class LearningRateLog(keras.callbacks.Callback):
    """Adds the optimizer's learning rate to each epoch's logs (TensorBoard draws it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))



@contextmanager
def _writes_refused(checkpoint_path):
    """What the callbacks write during training (the checkpoint, TensorBoard's logs) failing on a full or
    read-only disk, in TensorFlow's own error types, as the toolkit's one-line errors."""
    import tensorflow as tf

    try:
        yield
    except (OSError, tf.errors.OpError) as exc:
        folder = os.path.dirname(str(checkpoint_path))
        if is_disk_full(exc):
            raise DiskFullError(f"no space left on the device while writing {folder}: free some space and run "
                                "the same command again") from None
        text = str(getattr(exc, "message", exc))
        if isinstance(exc, (PermissionError, tf.errors.PermissionDeniedError)) or "Read-only file system" in text:
            raise UsageError(f"cannot write the run's checkpoint or training logs under {folder} "
                             f"({text.splitlines()[0][:200] if text else type(exc).__name__}); give an "
                             "{out} folder you can write to") from None
        raise


def train(model, network, config: TrainConfig, train_ds, *, val_ds, checkpoint_path, verbose: int = 1,
          log_dir=None, deadline: float | None = None) -> dict:
    """Run the phases and leave the best weights (lowest validation loss, or with ``monitor``
    "val_accuracy" the highest validation accuracy) in ``model``.

    Phases: from scratch, one phase with everything trainable at ``scratch_lr``.
    Pretrained: the head alone on the frozen base at ``head_lr`` (``unfreeze`` "0" stops
    here, for ``epochs`` epochs), then the last N layers unfrozen at ``lr`` for ``epochs``.
    The best weights of all phases are checkpointed to ``checkpoint_path`` (.weights.h5).
    With ``log_dir``, TensorBoard logs go there (Keras' own callback): losses, accuracies
    and the learning rate per epoch, the phases one after the other on one epoch axis.
    With ``deadline`` (a ``time.monotonic()`` moment), training ends there (:class:`Deadline`); a phase not
    begun by then is left out. The first epoch always begins (stopped at its first batch when the deadline has
    passed), so some weights are chosen on validation.

    Returns:
        history (list of per-epoch rows), unfrozen (layer count), best_epoch, train_seconds,
        seconds_to_best, stopped_by_time (the deadline ended training).
    """
    sigmoid = model.output.shape[-1] == 1
    history: list[dict] = []
    start = time.perf_counter()

    by_accuracy = config.monitor == "val_accuracy"
    # Keras' name for the validation accuracy of this output, which the callbacks watch
    watched = ("val_binary_accuracy" if sigmoid else "val_sparse_categorical_accuracy") if by_accuracy else "val_loss"

    def best_so_far():
        scored = [row for row in history if row["val_loss"] is not None and np.isfinite(row["val_loss"])]
        if by_accuracy:  # the highest validation accuracy, ties to the lower validation loss
            return max(scored, key=lambda row: (row["val_accuracy"], -row["val_loss"])) if scored else None
        return min(scored, key=lambda row: row["val_loss"]) if scored else None

    clock = Deadline(deadline) if deadline is not None else None

    def fit(phase: str, *, epochs: int, lr: float, scheduled: bool = False):
        if epochs <= 0:
            return
        if history and clock is not None and (clock.stopped or clock.too_late()):  # this phase would not fit: left out
            clock.stopped = True
            return
        # after any change of `trainable`, or the change is ignored
        compile_model(model, lr, sigmoid=sigmoid, weight_decay=config.weight_decay,
                      label_smoothing=config.label_smoothing)
        best = best_so_far()
        callbacks = [
            EpochTimer(phase, history, start),
            keras.callbacks.EarlyStopping(watched, patience=config.patience, mode="max" if by_accuracy else "min"),
            # Only an epoch better than every earlier phase's best replaces the checkpoint.
            keras.callbacks.ModelCheckpoint(str(checkpoint_path), monitor=watched, save_best_only=True,
                                            save_weights_only=True, mode="max" if by_accuracy else "min",
                                            initial_value_threshold=best["val_accuracy" if by_accuracy else
                                                                         "val_loss"] if best else None),
        ]
        if clock is not None:
            callbacks.append(clock)
        if log_dir is not None:
            callbacks += [LearningRateLog(), keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]
        done = len(history)  # this phase's epochs follow the earlier phases' on one axis
        if scheduled and (config.schedule != "constant" or config.warmup_epochs):
            callbacks.insert(0, keras.callbacks.LearningRateScheduler(
                lambda epoch, _: phase_rate(lr, epoch - done, epochs=epochs, schedule=config.schedule,
                                            warmup=config.warmup_epochs)))
        with warnings.catch_warnings(), _writes_refused(checkpoint_path):
            # The dataset's length is unknown (undecodable files are dropped), so Keras
            # finds its end each epoch and says so; the dataset shuffles itself.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(train_ds, validation_data=val_ds, epochs=done + epochs, initial_epoch=done,
                      callbacks=callbacks, verbose=verbose, shuffle=False)

    if config.scratch:
        unfrozen = set_trainable(network, "all", scratch=True)
        fit("scratch", epochs=config.epochs, lr=config.scratch_lr, scheduled=True)
    else:
        network.trainable = False
        unfrozen = 0
        main = config.unfreeze == "0"  # frozen in the graph: the head's phase is the only one
        fit("head", epochs=config.epochs if main else config.head_epochs, lr=config.head_lr, scheduled=main)
        if config.unfreeze != "0":
            unfrozen = set_trainable(network, config.unfreeze)
            fit("finetune", epochs=config.epochs, lr=config.lr, scheduled=True)
    train_seconds = time.perf_counter() - start
    best = best_so_far()
    if os.path.exists(checkpoint_path):  # none when no epoch had a finite validation loss
        with warnings.catch_warnings():  # the checkpoint's optimizer may be an earlier phase's
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(checkpoint_path)
    what = unfrozen_words(network, config.unfreeze, scratch=config.scratch)
    return {"history": history, "unfrozen": unfrozen, "unfrozen_what": what,
            "best_epoch": best["epoch"] if best else None, "train_seconds": train_seconds,
            "seconds_to_best": best["elapsed"] if best else None,
            "stopped_by_time": bool(clock is not None and clock.stopped)}
