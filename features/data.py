"""Datasets: listing image folders and TFDS sets, seeded stratified splits, decoding.

A :class:`DataSource` is the full, ordered listing of a dataset (ids, labels, the split of
every image) made before any pixel is decoded, so the split never depends on which files
turn out to be unreadable, and every method that lists the same dataset with the same
seed gets the same test images. Decoding carries each image's index through the
pipeline; a file that cannot be decoded is dropped by index and reported, never
shifting another image's label.

Folder layouts (``--data-dir``):

* ``DIR/<class>/...``: one sub-folder per class; the split is made here.
* ``DIR/{train,val|validation,test}/<class>/...``: predefined splits; a missing val or
  test split is carved, stratified, out of train.

Loose files at any root are ignored, and so are hidden files and folders (``.DS_Store``,
macOS ``._`` forks). Images in sub-folders of a class folder belong to that class.
Extensions: jpg, jpeg, png, bmp, gif, in any case. Classes are sorted by name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetUnavailableError, UsageError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
DEFAULT_SPLIT = (0.70, 0.15, 0.15)
TFDS_DATASETS = {"tf_flowers": "download.tensorflow.org", "cats_vs_dogs": "download.microsoft.com"}
RESIZE_METHOD = "bilinear, antialiased, whole image squashed to a square"


@dataclass
class DataSource:
    """An ordered, labelled, split listing of a dataset.

    Attributes:
        name: short name, used in cache paths (``tf_flowers``, or a folder's name).
        kind: "folder" or "tfds".
        location: the folder's absolute path, or the TFDS name.
        class_names: label i is ``class_names[i]``.
        ids: one per image: path relative to ``location``, or a TFDS id.
        labels: int64 (N,).
        splits: uint8 (N,), indices into :data:`SPLITS`.
        fingerprint: changes when the listing changes (a stale cache is recomputed).
        split_origin: how the split was made, for the record.
        tfds_dir: TFDS data folder (TFDS sources only).
    """

    name: str
    kind: str
    location: str
    class_names: list[str]
    ids: list[str]
    labels: np.ndarray
    splits: np.ndarray
    fingerprint: str
    split_origin: str
    tfds_dir: str | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def split_counts(self) -> dict[str, int]:
        return {name: int((self.splits == i).sum()) for i, name in enumerate(SPLITS)}

    def paths(self) -> list[str]:
        """Absolute file paths (folder sources)."""
        return [os.path.join(self.location, i) for i in self.ids]


def parse_split(text: str) -> tuple[float, float, float]:
    """Parse ``--split`` ("0.7,0.15,0.15" or "70/15/15") into fractions that sum to 1.

    Raises:
        UsageError: not three non-negative numbers, train is zero, or they do not add up.
    """
    parts = text.replace("/", ",").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 0:
        raise UsageError(f"--split {text}: give three non-negative fractions train,val,test "
                         "such as 0.7,0.15,0.15 or 70/15/15")
    total = sum(values)
    if abs(total - 1) > 1e-6 and abs(total - 100) > 1e-6:
        raise UsageError(f"--split {text}: the fractions add up to {total:g}, not 1 (or 100)")
    fractions = tuple(v / total for v in values)
    if fractions[0] == 0:
        raise UsageError(f"--split {text}: the train fraction must be above zero")
    return fractions


def stratified_split(labels: np.ndarray, fractions, seed: int) -> np.ndarray:
    """Assign each item to train/val/test, class by class, seeded.

    Each class is shuffled by its own generator (seeded by ``seed`` and the label) and cut
    by largest remainders, so every class follows the fractions as closely as its size
    allows, and the assignment does not depend on the order of the items.

    Returns:
        uint8 (N,) codes into :data:`SPLITS`.
    """
    labels = np.asarray(labels)
    fractions = np.asarray(fractions, dtype=float)
    codes = np.zeros(len(labels), dtype=np.uint8)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng = np.random.default_rng([int(seed), int(label)])
        members = members[rng.permutation(len(members))]
        raw = len(members) * fractions
        counts = np.floor(raw).astype(int)
        for i in np.argsort(-(raw - counts), kind="stable")[: len(members) - counts.sum()]:
            counts[i] += 1
        codes[members] = np.repeat(np.arange(len(fractions), dtype=np.uint8), counts)
    return codes


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in {"thumbs.db", "desktop.ini", "__macosx"}


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not _is_hidden(p.name))


def images_under(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursive, symlinks followed once), sorted."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in files:
            if not _is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.join(root, name))
    return sorted(found)


def _list_classes(root: Path, class_dirs: list[Path], class_names: list[str]):
    ids, labels = [], []
    for class_dir in class_dirs:
        files = images_under(class_dir)
        label = class_names.index(class_dir.name)
        ids += [os.path.relpath(f, root) for f in files]
        labels += [label] * len(files)
    return ids, labels


def _fingerprint(root: Path, ids: list[str]) -> str:
    h = hashlib.sha256()
    for rel in ids:
        st = os.stat(root / rel)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _subsample(labels: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > max_per_class:
            rng = np.random.default_rng([int(seed), int(label), 1])
            members = np.sort(rng.choice(members, max_per_class, replace=False))
        keep.append(members)
    return np.sort(np.concatenate(keep))


def load_folder(data_dir: str | Path, split=DEFAULT_SPLIT, seed: int = 0,
                max_per_class: int | None = None) -> DataSource:
    """List an image folder (see the module docstring for the layouts).

    Raises:
        DatasetUnavailableError: missing folder, fewer than two classes, or a class with no images.
    """
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise DatasetUnavailableError(f"--data-dir {data_dir}: no such folder")
    top = _subdirs(root)
    split_dirs = [d for d in top if d.name.lower() in SPLIT_DIRS]
    if split_dirs:
        others = [d.name for d in top if d not in split_dirs]
        if others or not any(SPLIT_DIRS[d.name.lower()] == "train" for d in split_dirs):
            raise DatasetUnavailableError(
                f"--data-dir {data_dir}: mixes split folders ({', '.join(d.name for d in split_dirs)}) "
                f"with other folders ({', '.join(others) or 'no train/'}); use either class folders, "
                "or train/ (and val/, test/) each holding class folders")
        class_names = sorted({c.name for d in split_dirs for c in _subdirs(d)})
        ids, labels, origin_split = [], [], []
        for d in split_dirs:
            part_ids, part_labels = _list_classes(root, _subdirs(d), class_names)
            ids += part_ids
            labels += part_labels
            origin_split += [SPLITS.index(SPLIT_DIRS[d.name.lower()])] * len(part_ids)
        origin = "folders " + ", ".join(d.name for d in split_dirs)
    else:
        class_names = [d.name for d in top]
        ids, labels = _list_classes(root, top, class_names)
        origin_split = None
        origin = None
    if len(class_names) < 2:
        raise DatasetUnavailableError(
            f"--data-dir {data_dir}: found {len(class_names)} class folder(s); a classifier needs "
            "at least two sub-folders, one per class, each holding images")
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [c for c, n in zip(class_names, counts) if n == 0]
    if empty:
        raise DatasetUnavailableError(
            f"--data-dir {data_dir}: class folder(s) {', '.join(empty)} hold no images "
            f"({'/'.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}); add images or remove the folder")
    order = np.arange(len(ids))
    if max_per_class:
        order = _subsample(labels, max_per_class, seed)
    ids = [ids[i] for i in order]
    labels = labels[order]
    if origin_split is None:
        splits = stratified_split(labels, split, seed)
        origin = f"stratified {'/'.join(f'{f:.2f}' for f in split)}, seed {seed}"
    else:
        splits = _complete_splits(np.asarray(origin_split, dtype=np.uint8)[order], labels, split, seed)
    return DataSource(name=root.name, kind="folder", location=str(root), class_names=class_names,
                      ids=ids, labels=labels, splits=splits, fingerprint=_fingerprint(root, ids),
                      split_origin=origin)


def _complete_splits(splits: np.ndarray, labels: np.ndarray, fractions, seed: int) -> np.ndarray:
    """Carve missing val/test splits out of the train folder, stratified and seeded."""
    present = set(splits.tolist())
    missing = [i for i in (1, 2) if i not in present]
    if not missing:
        return splits
    train = np.flatnonzero(splits == 0)
    keep = [0] + missing
    sub = stratified_split(labels[train], [fractions[i] for i in keep], seed)
    out = splits.copy()
    out[train] = np.asarray(keep, dtype=np.uint8)[sub]
    return out


def _host_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_tfds(name: str, tfds_dir: str | None = None, split=DEFAULT_SPLIT, seed: int = 0,
              max_per_class: int | None = None) -> DataSource:
    """List a TensorFlow Datasets set (its single ``train`` split), downloading it if needed.

    TFDS retries a failed download for minutes; when the dataset is not prepared in
    ``tfds_dir`` and its download host cannot be reached, this fails at once instead.

    Raises:
        DatasetUnavailableError: offline and not prepared; the message says what to do.
    """
    if name not in TFDS_DATASETS:
        raise UsageError(f"--dataset {name}: choose one of {', '.join(TFDS_DATASETS)}, "
                         "or give an image folder with --data-dir")
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=tfds_dir)
    if not builder.is_prepared() and not _host_reachable(TFDS_DATASETS[name]):
        raise DatasetUnavailableError(
            f"cannot download TFDS '{name}': {TFDS_DATASETS[name]} is unreachable (no network?) "
            f"and the dataset is not prepared in {builder.data_dir}. Either run once with "
            "network access (TFDS caches it; --tfds-dir picks the folder), or give an image "
            "folder with --data-dir DIR, one sub-folder per class (e.g. ../shared/datasets/flowers)")
    ds, info = _tfds_records(name, tfds_dir)
    ids, labels = [], []
    for batch_ids, batch_labels in ds.map(lambda ex: (ex["tfds_id"], ex["label"])).batch(4096):
        ids += [i.decode() for i in batch_ids.numpy()]
        labels.append(batch_labels.numpy())
    labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    order = _subsample(labels, max_per_class, seed) if max_per_class else np.arange(len(ids))
    ids, labels = [ids[i] for i in order], labels[order]
    h = hashlib.sha256(f"{name}\0{info.version}\0".encode() + "\n".join(ids).encode())
    return DataSource(name=name, kind="tfds", location=name,
                      class_names=list(info.features["label"].names), ids=ids, labels=labels,
                      splits=stratified_split(labels, split, seed), fingerprint=h.hexdigest()[:16],
                      split_origin=f"stratified {'/'.join(f'{f:.2f}' for f in split)}, seed {seed}",
                      tfds_dir=tfds_dir, extra={"tfds_version": str(info.version)})


def _tfds_records(name: str, tfds_dir: str | None):
    """TFDS records with undecoded image bytes and ids, in file order."""
    import tensorflow_datasets as tfds

    return tfds.load(name, split="train", data_dir=tfds_dir, with_info=True, shuffle_files=False,
                     decoders={"image": tfds.decode.SkipDecoding()},
                     read_config=tfds.ReadConfig(add_tfds_id=True))


def load_source(dataset: str | None = None, data_dir: str | None = None, **kwargs) -> DataSource:
    """The one entry point: an image folder if ``data_dir`` is given, else a TFDS set."""
    if data_dir:
        kwargs.pop("tfds_dir", None)
        return load_folder(data_dir, **kwargs)
    return load_tfds(dataset or "tf_flowers", **kwargs)


def decode_image(data, image_size: int):
    """Decode encoded bytes (JPEG/PNG/BMP/GIF, first frame) to float32 RGB 0-255, resized."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def encoded_images(source: DataSource, indices=None):
    """A ``tf.data.Dataset`` of (index, encoded bytes) for the given rows (all by default)."""
    import tensorflow as tf

    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    if source.kind == "folder":
        paths = np.asarray(source.paths(), dtype=object)[indices]
        ds = tf.data.Dataset.from_tensor_slices((indices.astype(np.int64), list(paths)))
        def read(i, path):
            return i, tf.io.read_file(path)

        return ds.map(read, num_parallel_calls=os.cpu_count() or 2)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(source.ids), tf.range(len(source), dtype=tf.int64)),
        default_value=-1)
    wanted = tf.constant(np.isin(np.arange(len(source)), indices))
    ds, _ = _tfds_records(source.location, source.tfds_dir)
    def indexed(example):
        return table.lookup(example["tfds_id"]), example["image"]

    def is_wanted(i, _):
        return tf.logical_and(i >= 0, tf.gather(wanted, tf.maximum(i, 0)))

    return ds.map(indexed).filter(is_wanted)


def decoded_images(source: DataSource, image_size: int, indices=None):
    """A ``tf.data.Dataset`` of (index, float32 image) with decoding in parallel.

    Undecodable images are dropped; the index says which row each image is, so a caller
    knows exactly what was skipped (see :func:`why_undecodable`) and labels never shift.
    """
    def decode(i, data):  # named: AutoGraph cannot find the source of lambdas on nearby lines
        return i, decode_image(data, image_size)

    ds = encoded_images(source, indices)
    return ds.map(decode, num_parallel_calls=os.cpu_count() or 2, deterministic=True).ignore_errors()


def fixed_threads(ds):
    """Turn tf.data autotuning off for a finished pipeline.

    Autotuning's optimiser thread competes with the network for the same cores, and
    deleting the iterator waits for its pass to end: up to 11 s measured on 2 cores.
    Decoding is ~8x faster than the network here, so fixed parallelism loses nothing.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def image_batches(source: DataSource, image_size: int, batch_size: int, indices=None):
    """Batches of (indices, images) in listing order, prefetched; see :func:`decoded_images`."""
    return fixed_threads(decoded_images(source, image_size, indices).batch(batch_size).prefetch(2))


def why_undecodable(source: DataSource, index: int) -> str:
    """The reason one row could not be decoded (re-tried eagerly, for the report)."""
    import tensorflow as tf

    try:
        if source.kind == "folder":
            data = tf.io.read_file(source.paths()[index])
        else:
            for i, data in encoded_images(source, [index]):
                break
            else:
                return "record not found"
        decode_image(data, 8)
    except Exception as exc:  # what TensorFlow says is the reason
        text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*", "",
                      str(getattr(exc, "message", exc))).strip()
        return (text.splitlines()[0] if text else type(exc).__name__)[:200]
    return "decoding failed in the pipeline only"
