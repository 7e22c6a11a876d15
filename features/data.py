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
macOS ``._`` forks, ``Thumbs.db``); :attr:`DataSource.ignored` counts them. Images in
sub-folders of a class folder belong to that class; symbolic links are followed, a folder
reached twice is read once. Extensions: jpg, jpeg, png, bmp, gif, in any case. Classes
are sorted by name.

Before decoding, :func:`read_headers` reads each file's header: its EXIF orientation
(applied), its pixel count (files over the limit are refused, never decoded) and, for
large JPEGs, the DCT scale to decode at.
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
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own limit: a 3:4 photo of about 8,200 x 10,900
RESIZE_METHOD = ("EXIF orientation applied; JPEGs at least twice the size DCT-downscaled while decoding; "
                 "bilinear (antialiased when shrinking over 2x), whole image squashed to a square")


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
        max_pixels: files whose header says more pixels are refused, never decoded.
        ignored: files under the class folders left out, counted by kind.
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
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    ignored: dict = field(default_factory=dict)
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


def images_under(folder: Path, ignored: dict | None = None) -> list[str]:
    """Image files under ``folder`` (recursive, symlinks followed once), sorted.

    Args:
        ignored: if given, counts what is left out, by kind ("hidden", "not an image
            extension", "folder reached twice through a link").
    """
    found, seen = [], set()
    ignored = {} if ignored is None else ignored

    def count(kind, n=1):
        if n:
            ignored[kind] = ignored.get(kind, 0) + n

    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop, or a folder linked twice
            count("folder reached twice through a link")
            dirs[:] = []
            continue
        seen.add(real)
        count("hidden", sum(_is_hidden(d) for d in dirs))
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in files:
            if _is_hidden(name):
                count("hidden")
            elif os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                count("not an image extension")
            else:
                found.append(os.path.join(root, name))
    return sorted(found)


def _list_classes(root: Path, class_dirs: list[Path], class_names: list[str], ignored: dict):
    ids, labels = [], []
    for class_dir in class_dirs:
        files = images_under(class_dir, ignored)
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
                max_per_class: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DataSource:
    """List an image folder (see the module docstring for the layouts).

    Raises:
        DatasetUnavailableError: missing folder, fewer than two classes, or a class with no images.
    """
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise DatasetUnavailableError(f"--data-dir {data_dir}: no such folder")
    top = _subdirs(root)
    ignored: dict[str, int] = {}
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
            part_ids, part_labels = _list_classes(root, _subdirs(d), class_names, ignored)
            ids += part_ids
            labels += part_labels
            origin_split += [SPLITS.index(SPLIT_DIRS[d.name.lower()])] * len(part_ids)
        origin = "folders " + ", ".join(d.name for d in split_dirs)
    else:
        class_names = [d.name for d in top]
        ids, labels = _list_classes(root, top, class_names, ignored)
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
                      split_origin=origin, max_pixels=max_pixels, ignored=ignored)


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
              max_per_class: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DataSource:
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
                      tfds_dir=tfds_dir, max_pixels=max_pixels, extra={"tfds_version": str(info.version)})


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


def decode_image(data, image_size: int, orientation=1, dct_shift=0, antialias=None):
    """Decode encoded bytes to float32 RGB 0-255, upright, resized to a square.

    Args:
        data: JPEG/PNG/BMP/GIF bytes (GIF: the first frame; alpha is dropped; 16-bit PNG
            is scaled to 8 bits; grayscale and CMYK become RGB).
        orientation: the EXIF orientation (1-8, see :func:`read_headers`), applied as a
            photo viewer does, before resizing.
        dct_shift: decode a JPEG at 1/2**dct_shift of its size (0-3), with the DCT doing
            the first downscaling for almost nothing; :func:`read_headers` picks it so
            that both sides stay at least ``image_size``.
        antialias: whether the resize filters (it matters when shrinking more than 2x);
            None decides from the decoded size, at some cost per image.
    """
    import tensorflow as tf

    def full():
        return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)

    if isinstance(dct_shift, int) and dct_shift == 0:
        image = full()
    else:
        scaled = [lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r) for r in (2, 4, 8)]
        image = tf.switch_case(tf.cast(dct_shift, tf.int32), [full, *scaled])
    if not (isinstance(orientation, int) and orientation == 1):
        image = tf.switch_case(tf.clip_by_value(tf.cast(orientation, tf.int32), 1, 8) - 1, [
            lambda: image,                                         # 1 upright
            lambda: tf.image.flip_left_right(image),               # 2 mirrored
            lambda: tf.image.rot90(image, 2),                      # 3 upside down
            lambda: tf.image.flip_up_down(image),                  # 4 mirrored, upside down
            lambda: tf.image.transpose(image),                     # 5 mirrored, on its side
            lambda: tf.image.rot90(image, 3),                      # 6 rotated: turn clockwise
            lambda: tf.image.rot90(tf.image.transpose(image), 2),  # 7 mirrored, other side
            lambda: tf.image.rot90(image, 1),                      # 8 rotated: turn anticlockwise
        ])
    # Antialiasing (a wider filter) matters when shrinking more than 2x; below that plain
    # bilinear decodes 1.7x faster with the same 5-fold accuracy (BENCHMARKS.md, "resize").
    # Both filters have non-negative weights that sum to one: values stay within 0-255.
    def resize(filtered):
        return lambda: tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=filtered)

    if antialias is None:
        shrink = tf.reduce_max(tf.cast(tf.shape(image)[:2], tf.float32)) / float(image_size)
        return tf.cond(shrink > 2.0, resize(True), resize(False))
    return resize(bool(antialias))()


@dataclass
class Headers:
    """What the file headers say, per listing row (folder sources; defaults elsewhere).

    Attributes:
        orientation: uint8 EXIF orientation, 1 (upright) when absent.
        dct_shift: uint8, JPEGs at least twice ``image_size`` on their short side are
            decoded at 1/2**shift (0 for any other file).
        antialias: uint8, 1 when the resize shrinks the (DCT-scaled) image more than 2x,
            0 when not, 2 when the header could not tell.
        refused: {row: reason} for files over the pixel limit: never decoded.
    """

    orientation: np.ndarray
    dct_shift: np.ndarray
    antialias: np.ndarray
    refused: dict


def read_headers(source: DataSource, indices, image_size: int, dct_scaling: bool = True) -> Headers:
    """Read the headers of the given rows' files (no pixel is decoded).

    Files with more than ``source.max_pixels`` pixels are refused: a small PNG can
    decode to gigabytes (a decompression bomb).

    A file Pillow cannot identify is left to the decoder, which gives the reason it fails.
    """
    from PIL import Image, UnidentifiedImageError

    n = len(source)
    headers = Headers(np.ones(n, np.uint8), np.zeros(n, np.uint8), np.full(n, 2, np.uint8), {})
    if source.kind != "folder":
        return headers
    paths, max_pixels = source.paths(), source.max_pixels
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the limit below is ours
    try:
        for i in np.asarray(indices, dtype=np.int64).tolist():
            try:
                with Image.open(paths[i]) as im:
                    width, height, fmt = im.width, im.height, im.format
                    orientation = im.getexif().get(0x0112, 1) if fmt in ("JPEG", "PNG", "WEBP") else 1
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                continue
            if max_pixels and width * height > max_pixels:
                headers.refused[i] = (f"{width}x{height} = {width * height:,} pixels is over the limit of "
                                      f"{max_pixels:,} (a decompression bomb?); raise --max-pixels if it is genuine")
                continue
            headers.orientation[i] = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
            if dct_scaling and fmt == "JPEG":
                shift = 0
                while shift < 3 and min(width, height) >> (shift + 1) >= image_size:
                    shift += 1
                headers.dct_shift[i] = shift
            headers.antialias[i] = max(width, height) / 2 ** headers.dct_shift[i] > 2 * image_size
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return headers


def _tfds_encoded(source: DataSource, indices):
    """A ``tf.data.Dataset`` of (index, encoded bytes) of the given rows of a TFDS source.

    (Folder sources read and decode each file in one step, in :func:`decoded_images`.)
    """
    import tensorflow as tf

    indices = np.asarray(indices)
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


def decoded_images(source: DataSource, image_size: int, indices=None, headers: Headers | None = None):
    """A ``tf.data.Dataset`` of (index, float32 image) with decoding in parallel.

    Undecodable images are dropped, and so are the rows ``headers`` refuses (over the
    pixel limit); the index says which row each image is, so a caller knows exactly what
    was skipped (see :func:`why_undecodable`) and labels never shift.

    Args:
        headers: from :func:`read_headers` (read here, with its defaults, when None).
    """
    import tensorflow as tf

    indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
    if headers is None:
        headers = read_headers(source, indices, image_size)
    if headers.refused:
        indices = indices[~np.isin(indices, list(headers.refused))]
    # Per-image branches cost throughput: only when some file needs them.
    orientation = tf.constant(headers.orientation) if (headers.orientation[indices] != 1).any() else None
    dct_shift = tf.constant(headers.dct_shift) if headers.dct_shift[indices].any() else None
    # One filter for all when the headers agree; else decided per image from its decoded size.
    filters = set(headers.antialias[indices].tolist())
    antialias = bool(min(filters)) if len(filters) == 1 and 2 not in filters else None

    def decode(i, data):  # named: AutoGraph cannot find the source of lambdas on nearby lines
        return i, decode_image(data, image_size, 1 if orientation is None else tf.gather(orientation, i),
                               0 if dct_shift is None else tf.gather(dct_shift, i), antialias)

    if source.kind == "folder":  # read and decode in one step: a second stage costs ~4%
        paths = np.asarray(source.paths(), dtype=object)[indices]
        ds = tf.data.Dataset.from_tensor_slices((indices, list(paths)))

        def read_and_decode(i, path):
            return decode(i, tf.io.read_file(path))

        ds = ds.map(read_and_decode, num_parallel_calls=os.cpu_count() or 2, deterministic=True)
    else:
        ds = _tfds_encoded(source, indices).map(decode, num_parallel_calls=os.cpu_count() or 2,
                                                 deterministic=True)
    return ds.ignore_errors()


SKIP_KINDS = ("empty file", "over the pixel limit", "truncated or corrupt", "not an image", "unreadable")


def skip_kind(reason: str) -> str:
    """The kind of a skip reason (one of :data:`SKIP_KINDS`), for the run's summary."""
    text = reason.lower()
    if text.startswith("empty file"):
        return "empty file"
    if "over the limit" in text:
        return "over the pixel limit"
    if "unknown image file format" in text or "not an image" in text:
        return "not an image"
    if any(w in text for w in ("jpeg", "png", "gif", "bmp", "truncat", "corrupt", "premature", "invalid")):
        return "truncated or corrupt"
    return "unreadable"


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


def image_batches(source: DataSource, image_size: int, batch_size: int, indices=None,
                  headers: Headers | None = None):
    """Batches of (indices, images) in listing order, prefetched; see :func:`decoded_images`."""
    return fixed_threads(decoded_images(source, image_size, indices, headers).batch(batch_size).prefetch(2))


def why_undecodable(source: DataSource, index: int) -> str:
    """The reason one row could not be decoded (re-tried eagerly, for the report)."""
    import tensorflow as tf

    refused = read_headers(source, [index], 8).refused
    if index in refused:
        return refused[index]
    try:
        if source.kind == "folder":
            if os.path.getsize(source.paths()[index]) == 0:
                return "empty file (0 bytes)"
            data = tf.io.read_file(source.paths()[index])
        else:
            for i, data in _tfds_encoded(source, [index]):
                break
            else:
                return "record not found"
        decode_image(data, 8)
    except Exception as exc:  # what TensorFlow says is the reason
        text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*", "",
                      str(getattr(exc, "message", exc))).strip()
        return (text.splitlines()[0] if text else type(exc).__name__)[:200]
    return "decoding failed in the pipeline only"
