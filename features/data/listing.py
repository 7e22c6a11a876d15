"""Listing a dataset: image folders and TFDS sets, as a :class:`DataSource`.

A :class:`DataSource` is the full, ordered listing of a dataset (ids, labels, the split of
every image) made before any pixel is decoded, so the split never depends on which files
turn out to be unreadable, and every method that lists the same dataset with the same
seed gets the same test images.

Folder layouts (``data_dir``):

* ``DIR/<class>/...``: one sub-folder per class; the split is made here.
* ``DIR/{train,val|validation,test}/<class>/...``: predefined splits; a missing val or
  test split is carved, stratified, out of train.

Loose files at any root are ignored, and so are hidden files and folders (``.DS_Store``,
macOS ``._`` forks, ``Thumbs.db``); :attr:`DataSource.ignored` counts them. Images in
sub-folders of a class folder belong to that class; symbolic links are followed, a folder
reached twice is read once. Extensions: jpg, jpeg, png, bmp, gif, in any case. Classes
are sorted by name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import validate
from ..errors import DatasetUnavailableError, UsageError
from .photo_ids import photo_path
from .splits import DEFAULT_SPLIT, SPLITS, complete_splits, describe_split, split_code, stratified_split, subsample

log = logging.getLogger(__name__)

SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
TFDS_DATASETS = {"tf_flowers": "download.tensorflow.org", "cats_vs_dogs": "download.microsoft.com"}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own limit: a 3:4 photo of about 8,200 x 10,900


@dataclass(kw_only=True)
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
        seed: the seed the split (and the sample of ``max_per_class``) was made with.
        split: the train/val/test fractions of the split made where the source had none.
        max_per_class: the seeded sample's size per class, or None for every image.

    The settings travel with the listing they made: an extraction keys its cache on them
    and on the splits themselves, so two listings of one folder never share a cache
    unless every image has the same split in both.
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
    seed: int = 0
    split: tuple = DEFAULT_SPLIT
    max_per_class: int | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def split_counts(self) -> dict[str, int]:
        return {name: int((self.splits == i).sum()) for i, name in enumerate(SPLITS)}

    def rows(self, split: str) -> np.ndarray:
        """Listing indices of one split's images ("train", "val" or "test"), in order."""
        return np.flatnonzero(self.splits == split_code(split))

    def paths(self) -> list[str]:
        """Absolute file paths (folder sources)."""
        return [str(photo_path(self.location, i)) for i in self.ids]


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in {"thumbs.db", "desktop.ini", "__macosx"}


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not _is_hidden(p.name) and _valid_name(p.name))


def _valid_name(name: str) -> bool:
    """Whether a file name decodes as UTF-8 (others come back from the OS with surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _inside(path: str, folders) -> bool:
    return any(path == f or path.startswith(f + os.sep) for f in folders)


def images_under(folder: Path, ignored: dict | None = None, *, seen: set | None = None,
                 other_classes=()) -> list[str]:
    """Image files under ``folder`` (recursive, symlinks followed once), sorted.

    Args:
        ignored: if given, counts what is left out, by kind ("hidden", "not an image
            extension", "folder reached twice through a link", "link into another class
            folder", "name not valid UTF-8").
        seen: real paths of folders already read (shared across class folders, so a
            folder reached twice is read once).
        other_classes: real paths of the other class folders: a link into one of them
            would put its images under two labels, so it is not followed.
    """
    found = []
    seen = set() if seen is None else seen
    ignored = {} if ignored is None else ignored

    def count(kind, n=1):
        if n:
            ignored[kind] = ignored.get(kind, 0) + n

    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if _inside(real, other_classes):
            log.warning("%s links into another class folder (%s); its images keep their own label and are "
                        "not read here", root, real)
            count("link into another class folder")
            dirs[:] = []
            continue
        if real in seen:  # a symlink loop, or a folder linked twice
            count("folder reached twice through a link")
            dirs[:] = []
            continue
        seen.add(real)
        count("hidden", sum(_is_hidden(d) for d in dirs))
        bad = [d for d in dirs if not _valid_name(d)]
        count("name not valid UTF-8", len(bad))
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d) and _valid_name(d))
        for name in files:
            if _is_hidden(name):
                count("hidden")
            elif os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                count("not an image extension")
            elif not _valid_name(name):
                log.warning("%r in %s: the file name is not valid UTF-8; rename it to use it", name, root)
                count("name not valid UTF-8")
            elif _inside(os.path.realpath(os.path.join(root, name)), other_classes):
                log.warning("%s links into another class folder; it keeps its own label", os.path.join(root, name))
                count("link into another class folder")
            elif (problem := _unstattable(os.path.join(root, name))) is not None:
                log.warning("%s: %s; it is left out", os.path.join(root, name), problem)
                count("cannot be read (a dangling or looping link, or no permission)")
            else:
                found.append(os.path.join(root, name))
    return sorted(found)


def _unstattable(path: str) -> str | None:
    """Why ``path`` cannot be looked at (a link to nothing, a loop of links, no permission); None when it can."""
    try:
        os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _list_classes(root: Path, class_dirs: list[Path], class_names: list[str], ignored: dict):
    ids, labels, seen = [], [], set()
    reals = {d: os.path.realpath(d) for d in class_dirs}
    for class_dir in class_dirs:
        others = [r for d, r in reals.items() if r != reals[class_dir] and not _inside(reals[class_dir], [r])]
        files = images_under(class_dir, ignored, seen=seen, other_classes=others)
        label = class_names.index(class_dir.name)
        ids += [os.path.relpath(f, root) for f in files]
        labels += [label] * len(files)
    return ids, labels


def _fingerprint(root: Path, ids: list[str]) -> str:
    h = hashlib.sha256()
    for rel in ids:
        try:
            st = os.stat(root / rel)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:  # gone since it was listed: the decode step skips it with its reason
            h.update(f"{rel}\0gone\n".encode())
    return h.hexdigest()[:16]


def load_folder(data_dir: str | Path, split=DEFAULT_SPLIT, *, seed: int = 0,
                max_per_class: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DataSource:
    """List an image folder (see the module docstring for the layouts).

    Raises:
        DatasetUnavailableError: missing folder, fewer than two classes, or a class with no images.
    """
    validate.seed(seed)
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise DatasetUnavailableError(f"{{data_dir}} {data_dir}: no such folder")
    top = _subdirs(root)
    ignored: dict[str, int] = {}
    split_dirs = [d for d in top if d.name.lower() in SPLIT_DIRS]
    if split_dirs:
        others = [d.name for d in top if d not in split_dirs]
        if others or not any(SPLIT_DIRS[d.name.lower()] == "train" for d in split_dirs):
            raise DatasetUnavailableError(
                f"{{data_dir}} {data_dir}: mixes split folders ({', '.join(d.name for d in split_dirs)}) "
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
            f"{{data_dir}} {data_dir}: found {len(class_names)} class folder(s); a classifier needs "
            "at least two sub-folders, one per class, each holding images")
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [c for c, n in zip(class_names, counts) if n == 0]
    if empty:
        raise DatasetUnavailableError(
            f"{{data_dir}} {data_dir}: class folder(s) {', '.join(empty)} hold no images "
            f"({'/'.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}); add images or remove the folder")
    order = np.arange(len(ids))
    if max_per_class:
        order = subsample(labels, max_per_class, seed)
    ids = [ids[i] for i in order]
    labels = labels[order]
    if origin_split is None:
        splits = stratified_split(labels, split, seed)
        origin = describe_split(split, seed)
    else:
        splits = complete_splits(np.asarray(origin_split, dtype=np.uint8)[order], labels, fractions=split, seed=seed)
    return DataSource(name=root.name, kind="folder", location=str(root), class_names=class_names,
                      ids=ids, labels=labels, splits=splits, fingerprint=_fingerprint(root, ids),
                      split_origin=origin, max_pixels=max_pixels, ignored=ignored, seed=seed, split=tuple(split),
                      max_per_class=max_per_class or None)


def _host_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_tfds(name: str, tfds_dir: str | None = None, *, split=DEFAULT_SPLIT, seed: int = 0,
              max_per_class: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DataSource:
    """List a TensorFlow Datasets set (its single ``train`` split), downloading it if needed.

    TFDS retries a failed download for minutes; when the dataset is not prepared in
    ``tfds_dir`` and its download host cannot be reached, this fails at once instead.

    Raises:
        DatasetUnavailableError: offline and not prepared; the message says what to do.
    """
    validate.seed(seed)
    if name not in TFDS_DATASETS:
        raise UsageError(f"{{dataset}} {name}: choose one of {', '.join(TFDS_DATASETS)}, "
                         "or give an image folder with {data_dir}")
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=tfds_dir)
    if not builder.is_prepared() and not _host_reachable(TFDS_DATASETS[name]):
        raise DatasetUnavailableError(
            f"cannot download TFDS '{name}': {TFDS_DATASETS[name]} is unreachable (no network?) "
            f"and the dataset is not prepared in {builder.data_dir}. Either run once with "
            "network access (TFDS caches it; {tfds_dir} picks the folder), or give an image "
            "folder with {data_dir=DIR}, one sub-folder per class (e.g. ../shared/datasets/flowers)")
    ds, info = tfds_records(name, tfds_dir)
    ids, labels = [], []
    for batch_ids, batch_labels in ds.map(lambda ex: (ex["tfds_id"], ex["label"])).batch(4096):
        ids += [i.decode() for i in batch_ids.numpy()]
        labels.append(batch_labels.numpy())
    labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    order = subsample(labels, max_per_class, seed) if max_per_class else np.arange(len(ids))
    ids, labels = [ids[i] for i in order], labels[order]
    h = hashlib.sha256(f"{name}\0{info.version}\0".encode() + "\n".join(ids).encode())
    return DataSource(name=name, kind="tfds", location=name,
                      class_names=list(info.features["label"].names), ids=ids, labels=labels,
                      splits=stratified_split(labels, split, seed), fingerprint=h.hexdigest()[:16],
                      split_origin=describe_split(split, seed),
                      tfds_dir=tfds_dir, max_pixels=max_pixels, seed=seed, split=tuple(split),
                      max_per_class=max_per_class or None)


def tfds_records(name: str, tfds_dir: str | None):
    """TFDS records with undecoded image bytes and ids, in file order."""
    import tensorflow_datasets as tfds

    return tfds.load(name, split="train", data_dir=tfds_dir, with_info=True, shuffle_files=False,
                     decoders={"image": tfds.decode.SkipDecoding()},
                     read_config=tfds.ReadConfig(add_tfds_id=True))


def check_source(source) -> DataSource:
    """``source`` as the jobs take it: a :class:`DataSource` (what :func:`load_source` returns).

    Raises:
        UsageError: anything else (a path, None).
    """
    if not isinstance(source, DataSource):
        raise UsageError(f"{{source}} {str(source)[:120]!r}: give the photos as load_source(...) lists them "
                         "(load_source(data_dir=FOLDER) or load_source(\"tf_flowers\"))")
    return source


def load_source(dataset: str | None = None, data_dir: str | None = None, **kwargs) -> DataSource:
    """The one entry point: an image folder if ``data_dir`` is given, else a TFDS set."""
    validate.optional_path(data_dir, "data_dir", "a folder of photos, one sub-folder a class")
    if data_dir:
        kwargs.pop("tfds_dir", None)
        return load_folder(data_dir, **kwargs)
    return load_tfds(dataset or "tf_flowers", **kwargs)


