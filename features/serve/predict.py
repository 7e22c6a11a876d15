"""Classify new images with a run folder (a fitted head with its backbone, or a fine-tuned model), several
run folders averaged, or an exported model (:mod:`.exported`); every one is a :class:`~.base.Predictor`.

Images go through the decoding their model was trained with: the extraction pipeline for
heads on embeddings, the training pipeline (decoded, resized, rounded to uint8) for
fine-tuned models. A run folder is refused, with the reason, when what it holds does not
match what it needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import SkippedImage, image_batches, images_under, indexed_batches
from ..errors import UsageError
from ..io import DATA_LIMIT, check_regular
from ..records.runs import RunFiles
from .base import Predictor

log = logging.getLogger(__name__)


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


@dataclass(kw_only=True)
class RunPredictor(Predictor):
    """A loaded run folder: a head on its backbones (``kind`` "head") or a fine-tuned model ("finetune")."""

    run_dir: Path
    kind: str  # "head" or "finetune"
    class_names: list[str]
    image_size: int
    model: object  # a head pipeline, or a keras.Model
    backbones: list = None  # a head's: (embed, image size, width, keras.Model or None on ONNX Runtime) of each
    runtime: str = "tf"  # what runs a head's backbones: "tf", "onnx" (ONNX Runtime) or "openvino"
    tta: str = "none"  # a head's: its cache's flip averaging, inside its backbone
    head: str | None = None  # a head's registry name
    meta: dict | None = None  # a head's record (head.skops): its backbone, pooling, weights, seed

    def probabilities(self, paths: list[str], batch_size: int = 32, tta: str = "none"):
        """``tta`` "flip" averages a fine-tuned model's probabilities of each image and its mirror;
        a head's embeddings are flip-averaged when its cache was (recorded in the run folder),
        whatever ``tta`` says."""
        if self.kind == "finetune":
            from ..train.loop import probabilities

            return probabilities(self.model,
                                 indexed_batches(paths, None, image_size=self.image_size, batch_size=batch_size), tta)
        parts, rows = [], None
        for embed, size, width, _ in self.backbones:
            index, emb = [], []
            for batch_index, images in image_batches(paths, size, batch_size=batch_size):
                index.append(batch_index.numpy())
                emb.append(np.asarray(embed(images), np.float32))
            got = np.concatenate(index) if index else np.zeros(0, np.int64)
            if rows is not None and not np.array_equal(rows, got):
                raise UsageError("the backbones decoded different images; give files every backbone can read")
            rows = got
            parts.append(np.vstack(emb) if emb else np.zeros((0, width), np.float32))
        if not len(rows):
            return rows, np.zeros((0, len(self.class_names)))
        return rows, self.model.predict_proba(np.hstack(parts))


class EnsemblePredictor(Predictor):
    """Several run folders' probabilities averaged, for each image every one of them read.

    Raises:
        UsageError: run folders of different classes.
    """

    def __init__(self, members: list[RunPredictor]):
        names = members[0].class_names
        for p in members[1:]:
            if p.class_names != names:
                raise UsageError(f"{p.run_dir} predicts {p.class_names}, {members[0].run_dir} {names}: an "
                                 "ensemble needs run folders of the same classes")
        self.members, self.class_names = members, names

    def probabilities(self, paths: list[str], batch_size: int = 32, tta: str = "none"):
        results = [p.probabilities(paths, batch_size, tta) for p in self.members]
        common = set(results[0][0].tolist())
        for rows, _ in results[1:]:
            common &= set(rows.tolist())
        rows = np.array(sorted(common), dtype=np.int64)
        if not len(rows):
            return rows, np.zeros((0, len(self.class_names)))
        return rows, np.mean([p[np.searchsorted(r, rows)] for r, p in results], axis=0)


def ensemble_members(path) -> list[str]:
    """The member run folders of ensemble.py's (or best.py's) run folder at ``path``, repeats kept (they are its
    weights); [] for any other folder.

    Raises:
        UsageError: an ensemble's folder whose record names no members.
    """
    files = RunFiles(path)
    if not Path(path).is_dir() or files.kind is not None or not (files / RunFiles.METRICS).is_file():
        return []
    row = files.read_metrics()
    if row.get("method") != "ensemble":
        return []
    members = row.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise UsageError(f"{path}: an ensemble's run folder whose metrics.json names no member run folders")
    # recorded as given (relative to where ensemble.py ran): else found beside the ensemble's folder
    beside = Path(path).resolve().parent
    return [m if Path(m).is_dir() or not (beside / Path(m).name).is_dir() else str(beside / Path(m).name)
            for m in members]


def open_predictor(path, ensemble=(), *, tta: str = "none", runtime: str = "auto") -> Predictor:
    """What ``predict.py`` classifies with: a run folder, an exported model, or run folders averaged.

    Args:
        path: a run folder of classify.py, finetune.py or ensemble.py, or a model export.py wrote (or its
            folder).
        ensemble: more run folders whose probabilities are averaged with ``path``'s.
        tta: the test-time augmentation asked for; an exported model runs as it was exported.
        runtime: what runs a head's backbones: "tf", "onnx", "openvino" or "auto" (see
            :mod:`features.models.runtime`; the network converted once into the ``onnx/`` folder beside the
            head's caches).

    Raises:
        UsageError: an export given with ``ensemble`` or ``tta``, or any run folder refused.
    """
    from .. import validate

    validate.path(path, "path", "a run folder or an export")
    from .exported import find_export, load_exported

    exported = find_export(path)
    if exported:
        if ensemble or tta != "none":
            raise UsageError(f"{path}: an exported model runs as it was exported; {{ensemble}} and {{tta}} "
                             "take run folders")
        return load_exported(exported)
    members = ensemble_members(path)
    if members:  # an ensemble's run folder: its members, a member chosen k times weighing k
        path, ensemble = members[0], [*members[1:], *ensemble]
    predictor = load_predictor(path, runtime)
    if ensemble:  # {tta} applies to the fine-tuned runs among them
        return EnsemblePredictor([predictor] + [load_predictor(d, runtime) for d in ensemble])
    if predictor.kind == "head" and tta != "none":
        raise UsageError(f"{path}: a head's embeddings are flip-averaged when its cache was extracted with flips "
                         f"(this head's: {predictor.tta}), whatever {{tta}} says; {{tta}} applies to fine-tuned runs")
    return predictor


@dataclass(kw_only=True)
class Predictions:
    """What :func:`predict` found: ``probabilities[j]`` is for ``paths[rows[j]]``; ``failed`` a
    :class:`~features.data.SkippedImage` of each image that could not be read (its position in ``paths``,
    its path, why)."""

    class_names: list[str]
    paths: list[str]
    rows: np.ndarray
    probabilities: np.ndarray
    failed: list[SkippedImage]
    predictor: Predictor | None = None  # what classified them (heatmaps reuse it: features.serve.explain)

    def top_k(self, k: int = 3) -> list[tuple[str, list[tuple[str, float]]]]:
        """(path, its k most likely classes with their probabilities) for each image read."""
        best = top_k(self.probabilities, self.class_names, min(k, len(self.class_names)))
        return [(self.paths[i], ranked) for i, ranked in zip(self.rows, best)]


def predict(path, inputs, *, ensemble=(), tta: str = "none", runtime: str = "auto",
            batch_size: int = 32) -> Predictions:
    """Classify the images at ``inputs`` (files and folders, searched as extract.py does) with the run
    folder or export at ``path`` (see :func:`open_predictor` for the other arguments).

    Raises:
        UsageError: no images in ``inputs``, a bad ``batch_size``, or a model refused.
    """
    from .. import validate

    validate.batch_size(batch_size)
    validate.path(path, "path", "a run folder or an export")
    inputs = validate.paths(inputs, "inputs", "photos or folders of photos")
    paths = list_inputs(inputs)
    if not paths:
        raise UsageError(f"no images in {', '.join(str(i) for i in inputs)}")
    predictor = open_predictor(path, ensemble, tta=tta, runtime=runtime)
    rows, proba, failed = predictor.predict(paths, batch_size, tta)
    return Predictions(class_names=list(predictor.class_names), paths=paths, rows=rows, probabilities=proba,
                       failed=failed, predictor=predictor)


def _refuse(run_dir, why: str):
    raise UsageError(f"{run_dir}: {why}")


def load_predictor(run_dir, runtime: str = "tf") -> RunPredictor:
    """Load a run folder written by classify.py (head.skops) or finetune.py (model.keras).

    Raises:
        UsageError: not a run folder, or its model and its record disagree (the message says how).
    """
    files = RunFiles(run_dir)
    if files.kind == "finetune":
        return _load_finetuned(files)
    if files.kind == "head":
        return _load_head(files, runtime)
    _refuse(run_dir, "not a run folder of classify.py (head.skops) or finetune.py (model.keras)")


def _load_finetuned(files: RunFiles) -> RunPredictor:
    import keras

    from ..models.build import preprocess_layer

    run_dir = files.folder
    preprocess_layer("none")  # registers the custom layer so that safe mode can load it
    try:
        config = files.read_config()
    except UsageError:
        _refuse(run_dir, "config.json is missing, unreadable or not a record of a run; it records the classes "
                         "and image size")
    try:
        check_regular(files / RunFiles.MODEL, DATA_LIMIT)  # a device or a FIFO: refused before Keras opens it
        model = keras.saving.load_model(files / RunFiles.MODEL, safe_mode=True, compile=False)
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
    return RunPredictor(run_dir=run_dir, kind="finetune", class_names=names, image_size=size, model=model)


def _embedder(backbone, pooling: str, tta: str, runtime: str, *, onnx_dir, seed: int = 0, precision: str = "fp32"):
    """(embed, width, runtime, Keras model or None) of one of a head's backbones: converted into ``onnx_dir`` once
    and run on ONNX Runtime or OpenVINO where ``runtime`` says so (:func:`features.models.runtime.choose`), at the
    ``precision`` its cache was made at where this machine can; else TensorFlow's frozen graph."""
    from ..device import visible_gpus
    from ..models.build import create_embedder, embedding_function
    from ..models.runtime import choose, prepare, why_no_bf16

    gpu = visible_gpus() > 0
    why = why_no_bf16(runtime) if precision == "bf16" else None
    if why:
        _at_fp32_instead(why)
    choice = choose(runtime, "fp32" if why else precision, gpu)
    if choice.runtime != "tf" and onnx_dir is not None:
        prepared = prepare(backbone, choice, pooling=pooling, tta=tta, seed=seed, folder=onnx_dir,
                                    asked=runtime)
        if choice.precision == "bf16" and prepared.choice.precision != "bf16":
            _at_fp32_instead(f"OpenVINO cannot run {backbone.name} here")
        if prepared.embed is not None:
            return prepared.embed, prepared.converted.width, prepared.choice.runtime, None
    model = create_embedder(backbone, pooling, tta=tta, seed=seed)
    return embedding_function(model, backbone.image_size), int(model.output.shape[-1]), "tf", model


def _onnx_folder(meta: dict):
    """Where the head's extraction kept its converted networks: ``onnx/`` in the caches' folder."""
    features = meta.get("features")
    first = features[0] if isinstance(features, list) and features else features
    if not isinstance(first, str):
        return None
    root = Path(first).parent.parent  # <out>/<dataset>/<cache>.h5
    return root / "onnx" if root.is_dir() else None


def _at_fp32_instead(why: str) -> None:
    log.warning("the head was trained on bf16 embeddings (%s): its backbone runs at fp32 here, whose embeddings "
                "differ a little (a cosine of 0.99 or more to them)", why)


def _load_head(files: RunFiles, runtime: str = "tf") -> RunPredictor:
    from ..heads.files import load_run_head
    from ..models.registry import resolve_backbone

    run_dir = files.folder
    head = load_run_head(files)
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
    models, width, ran = [], 0, set()
    for name, size, w in zip(backbones, sizes, weights):
        backbone = resolve_backbone(name, int(size), w or "imagenet")
        if backbone.weights not in ("imagenet", "none") and len(backbones) == 1 and meta.get("weights_sha256") \
                and backbone.weights_sha256 != meta["weights_sha256"]:
            _refuse(run_dir, f"the weights file {backbone.weights_file} changed since the head was trained "
                             "(checksum differs)")
        seed = meta.get("seed")
        embed, dim, used, model = _embedder(backbone, meta.get("pooling") or "avg", meta.get("tta") or "none",
                                            runtime, onnx_dir=_onnx_folder(meta),
                                            seed=seed if isinstance(seed, int) else 0,
                                            precision=meta.get("precision") or "fp32")
        models.append((embed, int(size), dim, model))
        width += dim
        ran.add(used)
    try:
        expected = int(pipeline.named_steps["scale"].n_features_in_)
    except (AttributeError, KeyError, TypeError, ValueError):
        _refuse(run_dir, "head.skops does not hold a fitted scaler and classifier of classify.py")
    if width != expected:
        _refuse(run_dir, f"the head takes {expected}-d embeddings but {meta.get('backbone')} gives {width}")
    return RunPredictor(run_dir=run_dir, kind="head", class_names=names, image_size=int(sizes[0]), model=pipeline,
                        backbones=models, tta=meta.get("tta") or "none",
                        runtime="+".join(sorted(ran)), head=str(head.get("head")), meta=meta)


def top_k(proba: np.ndarray, class_names, k: int) -> list[list[tuple[str, float]]]:
    """The k most probable classes of each row, best first."""
    order = np.argsort(-proba, axis=1)[:, :k]
    return [[(class_names[j], float(p[j])) for j in row] for p, row in zip(proba, order)]


def write_csv(path, paths, *, rows, proba, class_names, failed, heatmaps: dict | None = None) -> None:
    """One line per input: path, predicted class, each class's probability (or the error); with ``heatmaps``
    ({position in ``paths``: its PNG}) a last column names each photo's heatmap."""
    import csv

    from ..outputs import write_output

    by_row = dict(zip(rows.tolist(), proba))
    reasons = {skipped.index: skipped.reason for skipped in failed}

    def write(f):
        writer = csv.writer(f)
        writer.writerow(["path", "predicted", *[f"p_{c}" for c in class_names], "error",
                         *(["heatmap"] if heatmaps is not None else [])])
        for i, p in enumerate(paths):
            heat = [str(heatmaps.get(i, ""))] if heatmaps is not None else []
            if i in by_row:
                q = by_row[i]
                writer.writerow([p, class_names[int(np.argmax(q))], *[f"{v:.6f}" for v in q], "", *heat])
            else:
                writer.writerow([p, "", *[""] * len(class_names), reasons.get(i, "unreadable"), *heat])

    write_output(path, write, param="csv")
