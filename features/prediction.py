"""Classify new images with a run folder: a fitted head (with its backbone) or a fine-tuned model.

Images go through the decoding their model was trained with: the extraction pipeline for
heads on embeddings, the training pipeline (decoded, resized, rounded to uint8) for
fine-tuned models. A run folder is refused, with the reason, when what it holds does not
match what it needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import image_batches, images_under, indexed_batches, why_skipped
from .errors import UsageError


def list_inputs(inputs) -> list[str]:
    """Files as given (any extension) and the images under folders, in order, without repeats.

    Raises:
        UsageError: an input that does not exist.
    """
    paths: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += images_under(path)
        elif path.exists():  # a file, or a special one: reported as skipped, never read
            paths.append(str(path))
        else:
            raise UsageError(f"{item}: no such file or folder")
    seen = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


@dataclass
class Predictor:
    """A loaded run folder; :meth:`predict` maps image paths to class probabilities."""

    run_dir: Path
    kind: str  # "head" or "finetune"
    class_names: list[str]
    image_size: int
    model: object  # a head pipeline, or a keras.Model
    backbones: list = None

    def predict(self, paths: list[str], batch_size: int = 32, tta: str = "none"):
        """Probabilities for every decodable path, and (path, reason) for the others.

        ``tta`` "flip" averages a fine-tuned model's probabilities of each image and its
        mirror; a head's embeddings are flip-averaged when its cache was (recorded in the
        run folder), whatever ``tta`` says.
        """
        if self.kind == "finetune":
            from .training import probabilities

            rows, proba = probabilities(self.model, indexed_batches(paths, None, self.image_size, batch_size), tta)
        else:
            rows, proba = self._head_predict(paths, batch_size)
        failed = sorted(set(range(len(paths))) - set(rows.tolist()))
        return rows, proba, [(paths[i], why_skipped(paths, i).reason) for i in failed]

    def _head_predict(self, paths, batch_size):
        parts, rows = [], None
        for model, size in self.backbones:
            index, emb = [], []
            for batch_index, images in image_batches(paths, size, batch_size):
                index.append(batch_index.numpy())
                emb.append(np.asarray(model(images, training=False)))
            got = np.concatenate(index) if index else np.zeros(0, np.int64)
            if rows is not None and not np.array_equal(rows, got):
                raise UsageError("the backbones decoded different images; give files every backbone can read")
            rows = got
            parts.append(np.vstack(emb) if emb else np.zeros((0, model.output.shape[-1]), np.float32))
        if not len(rows):
            return rows, np.zeros((0, len(self.class_names)))
        return rows, self.model.predict_proba(np.hstack(parts))


def predict_ensemble(predictors: list[Predictor], paths: list[str], batch_size: int = 32, tta: str = "none"):
    """The mean of several run folders' probabilities for each image every one of them read.

    Raises:
        UsageError: run folders of different classes.
    """
    names = predictors[0].class_names
    for p in predictors[1:]:
        if p.class_names != names:
            raise UsageError(f"{p.run_dir} predicts {p.class_names}, {predictors[0].run_dir} {names}: an ensemble "
                             "needs run folders of the same classes")
    results = [p.predict(paths, batch_size, tta) for p in predictors]
    common = set(results[0][0].tolist())
    for rows, _, _ in results[1:]:
        common &= set(rows.tolist())
    rows = np.array(sorted(common), dtype=np.int64)
    proba = np.mean([p[np.searchsorted(r, rows)] for r, p, _ in results], axis=0) if len(rows) else \
        np.zeros((0, len(names)))
    failed = sorted(set(range(len(paths))) - common)
    return rows, proba, [(paths[i], why_skipped(paths, i).reason) for i in failed]


def _refuse(run_dir, why: str):
    raise UsageError(f"{run_dir}: {why}")


def load_predictor(run_dir) -> Predictor:
    """Load a run folder written by classify.py (head.skops) or finetune.py (model.keras).

    Raises:
        UsageError: not a run folder, or its model and its record disagree (the message says how).
    """
    run_dir = Path(run_dir)
    if (run_dir / "model.keras").is_file():
        return _load_finetuned(run_dir)
    if (run_dir / "head.skops").is_file():
        return _load_head(run_dir)
    _refuse(run_dir, "not a run folder of classify.py (head.skops) or finetune.py (model.keras)")


def _load_finetuned(run_dir: Path) -> Predictor:
    import keras

    from .backbones import preprocess_layer

    preprocess_layer("none")  # registers the custom layer so that safe mode can load it
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict):
        _refuse(run_dir, "config.json is missing, unreadable or not a record of a run; it records the classes "
                         "and image size")
    try:
        model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - whatever Keras says, the file is refused, never run
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Lambda" in reason:
            reason = "it holds a Lambda layer, whose Python code safe loading never runs"
        _refuse(run_dir, f"model.keras cannot be loaded safely: {reason[:300]}")
    names, size = config.get("class_names") or [], config.get("image_size")
    if tuple(model.input_shape[1:3]) != (size, size):
        _refuse(run_dir, f"model.keras takes {model.input_shape[1:3]} images but config.json says {size}")
    units = model.output_shape[-1]
    if len(names) < 2 or units not in (len(names), 1 if len(names) == 2 else len(names)):
        _refuse(run_dir, f"model.keras has {units} outputs for the {len(names)} classes in config.json")
    return Predictor(run_dir, "finetune", names, size, model)


def _load_head(run_dir: Path) -> Predictor:
    from .backbones import create_backbone, resolve_backbone
    from .heads import load_head

    head = load_head(run_dir / "head.skops")
    meta = head.get("meta") or {}
    if not isinstance(meta, dict):
        _refuse(run_dir, "head.skops holds no record of its classes and backbone")
    names = meta.get("class_names") or []
    pipeline = head.get("pipeline")
    classes = getattr(pipeline, "classes_", None)
    if len(names) < 2 or classes is None or len(classes) != len(names):
        _refuse(run_dir, f"the head predicts {0 if classes is None else len(classes)} classes but records "
                         f"{len(names)} class names")
    backbones = str(meta.get("backbone", "")).split("+")
    sizes = meta.get("image_size")
    sizes = sizes if isinstance(sizes, list) else [sizes]
    weights = meta.get("weights")
    weights = weights if isinstance(weights, list) else [weights] * len(backbones)
    if len(sizes) != len(backbones) or len(weights) != len(backbones) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        _refuse(run_dir, "the head's record does not say the image size and weights of each backbone")
    models, width = [], 0
    for name, size, w in zip(backbones, sizes, weights):
        backbone = resolve_backbone(name, int(size), w or "imagenet")
        if backbone.weights not in ("imagenet", "none") and len(backbones) == 1 and meta.get("weights_sha256") \
                and backbone.weights_sha256 != meta["weights_sha256"]:
            _refuse(run_dir, f"the weights file {backbone.weights_file} changed since the head was trained "
                             "(checksum differs)")
        model = create_backbone(backbone, pooling=meta.get("pooling") or "avg", tta=meta.get("tta") or "none")
        models.append((model, int(size)))
        width += int(model.output.shape[-1])
    try:
        expected = int(pipeline.named_steps["scale"].n_features_in_)
    except (AttributeError, KeyError, TypeError, ValueError):
        _refuse(run_dir, "head.skops does not hold a fitted scaler and classifier of classify.py")
    if width != expected:
        _refuse(run_dir, f"the head takes {expected}-d embeddings but {meta.get('backbone')} gives {width}")
    return Predictor(run_dir, "head", names, int(sizes[0]), pipeline, models)


def top_k(proba: np.ndarray, class_names, k: int) -> list[list[tuple[str, float]]]:
    """The k most probable classes of each row, best first."""
    order = np.argsort(-proba, axis=1)[:, :k]
    return [[(class_names[j], float(p[j])) for j in row] for p, row in zip(proba, order)]


def write_csv(path, paths, rows, proba, class_names, failed) -> None:
    """One line per input: path, predicted class, each class's probability (or the error)."""
    import csv

    from .runs import write_output

    by_row = dict(zip(rows.tolist(), proba))
    reasons = dict(failed)

    def write(f):
        writer = csv.writer(f)
        writer.writerow(["path", "predicted", *[f"p_{c}" for c in class_names], "error"])
        for i, p in enumerate(paths):
            if i in by_row:
                q = by_row[i]
                writer.writerow([p, class_names[int(np.argmax(q))], *[f"{v:.6f}" for v in q], ""])
            else:
                writer.writerow([p, "", *[""] * len(class_names), reasons.get(p, "unreadable")])

    write_output(path, write, param="csv")
