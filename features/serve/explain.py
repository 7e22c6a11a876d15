"""Where the network looked: a class's activation map over each photo, for a run folder's model.

Two methods, each where it is exact or where it is defined:

- **CAM** (Zhou et al. 2016), for a linear head (logreg, linear_svm, sgd) on average-pooled embeddings
  of a Keras backbone. The embedding is the mean of the last feature map ``F`` over its positions, and the
  head's class score is linear in it (the scaler folded in, :func:`features.heads.fold_head`), so
  ``z_k = mean_p(F[p] . w_k) + b_k`` exactly: ``map[p] = F[p] . w_k`` costs one forward pass, and its
  mean plus the head's constant ``b_k`` (its bias and the scaler's shift) gives back the class score.
  With ``--tta flip`` caches the map of the mirrored photo is mirrored back and averaged, which keeps it exact.
- **Grad-CAM** (Selvaraju et al. 2017) everywhere else that has a feature map: a fine-tuned model (the
  gradient of the output layer's pre-activation score with respect to the base's last feature map, by
  TensorFlow), and a head on max-pooled embeddings or a non-linear head (svm). For a head on pooled
  embeddings Grad-CAM's weights are the score's gradient with respect to the embedding, so
  ``map[p] = F[p] . grad``: exact for a linear head. The RBF SVM has no gradient to ask for, and its
  log-probability is not homogeneous in the embedding: along a position's own features it mostly falls
  (every position's features point away from every training photo; measured on the shared flowers, most
  photos' maps had no positive part). Its map is the derivative of its log-probability along each
  position's deviation from the photo's mean, ``F[p] - e``, by central differences (two head calls a
  position, not two a feature): where the photo speaks for the class more than it does as a whole.

What has no map is refused in one line naming what does: a knn head (its probabilities are neighbours'
votes, flat almost everywhere), a KerasHub encoder (its embedding is a class token or an attention-pooled
token, not a mean over positions), a head on several backbones' embeddings, an exported model, an ensemble.

Maps are signed (positive: evidence for the class); :func:`features.records.sheets.overlay` draws their
positive part over the photo, as both papers do. The feature maps are computed in fp32 by TensorFlow,
whatever runtime and precision the head's cache was made with (a bf16 cache's embeddings are within a
cosine of 0.99 of these).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .predict import RunPredictor

METHODS = ("cam", "grad-cam")
EXPLAINED_HEADS = ("logreg", "linear_svm", "sgd", "svm")
STEP = 1e-3  # the central differences' step along a position's features, relative to them


@dataclass(kw_only=True)
class Heatmaps:
    """The maps of the photos that decoded: ``maps[j]`` is of ``paths[rows[j]]`` for class ``classes[j]``.

    Attributes:
        probabilities: (n, classes) the model's probabilities of each photo (from the same pass).
        maps: (n, h, w) float64 on the network's grid, positive where the photo speaks for the class.
        constants: CAM only: the head's constant of each row's class (``maps[j].mean() + constants[j]`` is
            the class score); None for Grad-CAM.
        method: "cam" or "grad-cam".
    """

    rows: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    maps: np.ndarray
    constants: np.ndarray | None
    method: str


def _refuse(predictor, why: str):
    raise UsageError(f"{predictor.run_dir}: no heatmap: {why}")


def explainer(predictor):
    """The explainer of a loaded run folder (see the module docstring for which method each gets).

    Raises:
        UsageError: a model with no map (knn, a KerasHub encoder, several backbones, an export, an ensemble).
    """
    if not isinstance(predictor, RunPredictor):
        raise UsageError("heatmaps need one run folder of classify.py or finetune.py, not an exported model or "
                         "an ensemble: give the run folder itself")
    if predictor.kind == "finetune":
        return FinetuneExplainer(predictor)
    return HeadExplainer(predictor)


class HeadExplainer:
    """CAM or Grad-CAM of a head on one Keras backbone's pooled embeddings (see the module docstring)."""

    def __init__(self, predictor: RunPredictor):
        from ..heads.registry import get_head_spec
        from ..models.build import create_backbone
        from ..models.hub import is_hub
        from ..models.registry import resolve_backbone

        meta, head = predictor.meta or {}, predictor.head
        if len(predictor.backbones) != 1:
            _refuse(predictor, f"the head reads {len(predictor.backbones)} backbones' embeddings side by side; "
                               "heatmaps are drawn for a head on one backbone")
        name = str(meta.get("backbone"))
        if is_hub(name):
            _refuse(predictor, f"{name} is a KerasHub encoder: its embedding is a class token or an attention-"
                               "pooled token, not a mean over positions; heatmaps are drawn for Keras backbones")
        if head not in EXPLAINED_HEADS:
            _refuse(predictor, f"a {head} head's probabilities are its neighbours' votes, flat almost everywhere: "
                               f"no gradient to map; heads with heatmaps: {', '.join(EXPLAINED_HEADS)}")
        self.predictor, self.pipeline = predictor, predictor.model
        self.pooling, self.tta = meta.get("pooling") or "avg", meta.get("tta") or "none"
        spec = get_head_spec(head)
        self.linear = None
        if spec.fold is not None:
            from ..heads.fitted import fold_head

            linear = fold_head(self.pipeline, head)
            kernel, bias = linear.kernel.mean(axis=0), linear.bias.mean(axis=0)  # the members' mean score
            if kernel.shape[1] == 1:  # one logit for two classes: the first class's score is its negative
                kernel, bias = np.concatenate([-kernel, kernel], axis=1), np.concatenate([-bias, bias])
            self.linear = (kernel, bias)
        self.method = "cam" if self.linear is not None and self.pooling == "avg" else "grad-cam"
        seed = meta.get("seed")
        backbone = resolve_backbone(name, predictor.image_size, meta.get("weights") or "imagenet")
        if backbone.weights == "none":
            import keras

            keras.utils.set_random_seed(seed if isinstance(seed, int) else 0)  # the network extraction built
        self.model = create_backbone(backbone, pooling=None)
        if len(self.model.output.shape) != 4:
            _refuse(predictor, f"{name} gives no feature map to draw")

    def _feature_maps(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        """(F, F of the mirrored images or None): (n, h, w, C) float64."""
        x = np.asarray(images, np.float32)
        maps = np.asarray(self.model(x, training=False), np.float64)
        mirrored = np.asarray(self.model(x[:, :, ::-1], training=False), np.float64) if self.tta == "flip" else None
        return maps, mirrored

    def _pool(self, maps):
        return maps.mean(axis=(1, 2)) if self.pooling == "avg" else maps.max(axis=(1, 2))

    def _derivatives(self, embedding, directions, k: int) -> np.ndarray:
        """The head's log-probability of class ``k`` differentiated along each direction (rows), centrally."""
        step = STEP * np.linalg.norm(embedding) / np.maximum(np.linalg.norm(directions, axis=1), 1e-12)
        shifted = np.concatenate([embedding + step[:, None] * directions, embedding - step[:, None] * directions])
        logp = np.log(np.clip(self.pipeline.predict_proba(shifted)[:, k], 1e-300, None))
        n = len(directions)
        return (logp[:n] - logp[n:]) / (2 * step)

    def _map(self, maps, embedding, k: int) -> np.ndarray:
        h, w, c = maps.shape
        if self.linear is not None:  # exact: the score is linear in the embedding
            return maps @ self.linear[0][:, k]
        return self._derivatives(embedding, maps.reshape(-1, c) - embedding, k).reshape(h, w)

    def explain(self, paths, classes=None, *, batch_size: int = 32, tta: str = "none") -> Heatmaps:
        """Maps of ``classes`` (one per path; None: each photo's predicted class) for the photos at ``paths``,
        decoded as the head's extraction decoded them (flip-averaged when its cache was: ``tta`` is the
        cache's, whatever is given)."""
        from ..data import image_batches

        rows, proba, out, constants, wanted = [], [], [], [], []
        for index, images in image_batches(list(paths), self.predictor.image_size, batch_size=batch_size):
            index = index.numpy()
            maps, mirrored = self._feature_maps(images.numpy())
            embeddings = self._pool(maps) if mirrored is None else (self._pool(maps) + self._pool(mirrored)) / 2
            p = self.pipeline.predict_proba(embeddings)
            ks = p.argmax(1) if classes is None else np.asarray(classes)[index]
            for j, k in enumerate(ks.tolist()):
                m = self._map(maps[j], embeddings[j], k)
                if mirrored is not None:
                    m = (m + self._map(mirrored[j], embeddings[j], k)[:, ::-1]) / 2
                out.append(m)
                if self.method == "cam":
                    constants.append(self.linear[1][k])
            rows.append(index)
            proba.append(p)
            wanted.append(ks)
        return _heatmaps(rows, wanted, proba, out, constants=constants if self.method == "cam" else None,
                         method=self.method, n_classes=len(self.predictor.class_names))


class FinetuneExplainer:
    """Grad-CAM of a fine-tuned (or from-scratch) model: the base's last feature map, the output's score."""

    method = "grad-cam"

    def __init__(self, predictor: RunPredictor):
        import keras

        model = predictor.model
        bases = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.Model)
                 and layer.name.endswith("_backbone")]
        if not bases:
            _refuse(predictor, "model.keras holds no backbone whose feature map could be drawn")
        self.base = model.layers[bases[-1]]
        self.after = [layer for layer in model.layers[bases[-1] + 1:]]
        if len(self.base.output.shape) != 4:
            _refuse(predictor, f"{self.base.name} is a KerasHub encoder: its embedding is a class token or an "
                               "attention-pooled token, not a feature map; heatmaps are drawn for Keras backbones")
        if not self.after or not isinstance(self.after[-1], keras.layers.Dense):
            _refuse(predictor, "model.keras does not end in the course's dense output layer")
        self.predictor, self.model = predictor, model

    def _maps(self, images, classes) -> tuple[np.ndarray, np.ndarray]:
        """(Grad-CAM maps (n, h, w), probabilities (n, classes)) of one batch."""
        import tensorflow as tf

        x = tf.convert_to_tensor(images, tf.float32)
        with tf.GradientTape() as tape:
            maps = self.base(x, training=False)
            tape.watch(maps)
            h = maps
            for layer in self.after[:-1]:
                h = layer(h, training=False)
            out = self.after[-1]
            z = tf.matmul(tf.cast(h, tf.float32), tf.cast(out.kernel, tf.float32)) + tf.cast(out.bias, tf.float32)
            if z.shape[-1] == 1:  # one sigmoid unit: the second class's score is its logit, the first's its negative
                z = tf.concat([-z, z], axis=-1)
                proba = tf.concat([1 - tf.sigmoid(z[:, 1:]), tf.sigmoid(z[:, 1:])], axis=-1)
            else:
                proba = tf.nn.softmax(z, axis=-1)
            ks = tf.argmax(proba, axis=1) if classes is None else tf.constant(classes, tf.int64)
            score = tf.reduce_sum(tf.gather(z, ks, axis=1, batch_dims=1))
        grads = tape.gradient(score, maps)
        weights = tf.reduce_mean(tf.cast(grads, tf.float64), axis=(1, 2))  # alpha_c: the mean gradient of a channel
        cam = tf.einsum("nhwc,nc->nhw", tf.cast(maps, tf.float64), weights)
        return cam.numpy(), proba.numpy().astype(np.float64)

    def explain(self, paths, classes=None, *, batch_size: int = 32, tta: str = "none") -> Heatmaps:
        """Maps of ``classes`` (None: each photo's predicted class) for the photos at ``paths``, decoded as
        the model was trained (rounded to uint8); with ``tta`` "flip" the mirrored photo's map is mirrored
        back and averaged, as its probabilities are."""
        from ..data import indexed_batches

        rows, proba, out, wanted = [], [], [], []
        for index, images in indexed_batches(list(paths), None, image_size=self.predictor.image_size,
                                             batch_size=batch_size):
            index, images = index.numpy(), images.numpy()
            ks = None if classes is None else np.asarray(classes)[index]
            cam, p = self._maps(images, ks)
            if tta == "flip":
                ks = p.argmax(1) if ks is None else ks
                flipped, q = self._maps(images[:, :, ::-1], ks)
                cam, p = (cam + flipped[:, :, ::-1]) / 2, (p + q) / 2
            rows.append(index)
            proba.append(p)
            out.extend(cam)
            wanted.append(p.argmax(1) if ks is None else ks)
        return _heatmaps(rows, wanted, proba, out, constants=None, method=self.method,
                         n_classes=len(self.predictor.class_names))


def _heatmaps(rows, classes, proba, maps, *, constants, method: str, n_classes: int) -> Heatmaps:
    if not rows:
        return Heatmaps(rows=np.zeros(0, np.int64), classes=np.zeros(0, np.int64),
                        probabilities=np.zeros((0, n_classes)), maps=np.zeros((0, 1, 1)),
                        constants=None if constants is None else np.zeros(0), method=method)
    return Heatmaps(rows=np.concatenate(rows), classes=np.concatenate(classes).astype(np.int64),
                    probabilities=np.vstack(proba), maps=np.stack(maps),
                    constants=None if constants is None else np.asarray(constants, np.float64), method=method)


def explain(run_dir, inputs, *, classes=None, batch_size: int = 32, tta: str = "none", runtime: str = "tf"):
    """(paths, :class:`Heatmaps`) of the images at ``inputs`` (files and folders, as predict.py takes them) for
    the run folder at ``run_dir``.

    Raises:
        UsageError: no images, or a model with no map (see :func:`explainer`).
    """
    from .. import validate

    validate.path(run_dir, "run_dir", "a run folder")
    inputs = validate.paths(inputs, "inputs", "photos or folders of photos")
    from .predict import list_inputs, load_predictor

    paths = list_inputs(inputs)
    if not paths:
        raise UsageError(f"no images in {', '.join(str(i) for i in inputs)}")
    return paths, explainer(load_predictor(run_dir, runtime)).explain(paths, classes, batch_size=batch_size, tta=tta)


def photo_root(run_dir) -> str | None:
    """The folder a run's image ids are relative to: its cache's source folder (a head) or its own (a
    fine-tune); None where its photos are not a folder at hand (a TFDS set, a folder moved away)."""
    import os

    from ..records.runs import RunFiles

    files = RunFiles(run_dir)
    config = files.read_config()
    if files.kind == "head":
        from ..cache import photo_root as cache_photo_root
        from ..cache import read_attrs
        from ..errors import CacheError

        features = config.get("features") or []
        try:
            attrs = read_attrs(features[0])
        except (CacheError, IndexError, TypeError, OSError):
            return None
        root = cache_photo_root(attrs)
    else:
        root = config.get("source")
    return str(root) if isinstance(root, str) and os.path.isdir(root) else None


def explain_top_losses(run_dir, path, *, top: int | None = None, batch_size: int = 32) -> dict:
    """The run's top-losses sheet (:func:`features.records.sheets.worst` of its test predictions) drawn at
    ``path`` with each photo's heatmap of the class it was wrongly given.

    Returns:
        :func:`~features.records.sheets.worst`'s record, with "method" (how the maps were made) and "drawn"
        (how many photos got a map: a photo gone since the run gets none).

    Raises:
        UsageError: the run has no map (see :func:`explainer`), or no probabilities or photos to read.
    """
    from .. import validate

    validate.path(run_dir, "run_dir", "a run folder")
    validate.path(path, "path", "the sheet to draw (a PNG)")
    from ..data.photo_ids import photo_path
    from ..records.runs import RunFiles
    from ..records.sheets import TOP_LOSSES, draw_top_losses, worst
    from .predict import load_predictor

    names, splits = RunFiles(run_dir).read_probabilities()
    ids, labels, proba = splits["test"]
    found = worst(ids, labels, proba=proba, class_names=names, top=TOP_LOSSES if top is None else top)
    root = photo_root(run_dir)
    if root is None:
        raise UsageError(f"{run_dir}: its photos are not a folder at hand (a TFDS set, or moved): no heatmaps")
    explaining = explainer(load_predictor(run_dir, "tf"))
    losses = found["top_losses"]
    paths = [str(photo_path(root, loss["id"])) for loss in losses]
    classes = [names.index(loss["predicted"]) for loss in losses]
    maps = {}
    if losses:
        tta = RunFiles(run_dir).read_config().get("tta") or "none"  # a fine-tune's scoring flips, if it did
        got = explaining.explain(paths, classes, batch_size=batch_size, tta=tta if tta in ("none", "flip") else "none")
        maps = {losses[r]["id"]: m for r, m in zip(got.rows.tolist(), got.maps)}
    what = describe(explaining)
    draw_top_losses(found, root, path=path, heatmaps=maps, note=f"heatmaps: {what}, of the class each photo was given")
    return {**found, "method": explaining.method, "drawn": len(maps)}


def describe(explaining) -> str:
    """How an explainer's maps are made, in words (a sheet's note, predict.py's line)."""
    predictor = explaining.predictor
    if isinstance(explaining, FinetuneExplainer):
        return f"Grad-CAM of the fine-tuned {explaining.base.name.removesuffix('_backbone')}"
    method = "CAM" if explaining.method == "cam" else "Grad-CAM"
    return f"{method} of {predictor.head} on {(predictor.meta or {}).get('backbone')}"


def write_heatmaps(folder, paths, found: Heatmaps, class_names, size: int = 320, *, shown=None,
                   names=None) -> dict:
    """One PNG a photo in ``folder``: the photo, and its heatmap over it, captioned with the class and its
    probability; named ``<position>-<file name>.png`` (two photos of one name in two folders get two files).

    Args:
        shown: {position in ``paths``: probabilities} the user was shown (predict.py's, on the runtime and at the
            precision that answered: a bf16 head's are not TensorFlow's fp32 ones the maps come with); None:
            the maps' own.
        names: {position in ``paths``: the name to caption the photo with} (an upload's own file name, where its
            path is a server's temporary one); None: each path's.

    Returns:
        {position in ``paths``: the PNG's path}.
    """
    import re
    from pathlib import Path

    from ..outputs import check_output_folder
    from ..records.sheets import Tile, draw_sheet, short_name

    folder, written = check_output_folder(folder, param="explain"), {}
    for row, k, p, heat in zip(found.rows.tolist(), found.classes.tolist(), found.probabilities, found.maps):
        photo = Path(paths[row])
        stem = re.sub(r"[^\w.-]", "_", photo.stem)[:80]
        png = folder / f"{row:04d}-{stem}.png"
        p = p if shown is None or row not in shown else shown[row]
        caption = f"{short_name(str((names or {}).get(row, photo)), 48)}\n{class_names[k]} {p[k]:.3f}"
        what = f"{found.method}: {class_names[k]}" if (heat > 0).any() else \
            f"{found.method}: no part of it speaks for {class_names[k]}"
        draw_sheet([[Tile(photo, caption), Tile(photo, what, heat)]], png, size=size)
        written[row] = png
    return written
