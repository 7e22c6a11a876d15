"""Every tf.data batch pipeline of the toolkit: extraction, training, scoring, prediction.

Each reads either a :class:`~.listing.DataSource` (its rows by listing index) or a plain
list of image paths (prediction: no labels, no split), decodes in parallel with
:func:`~.decoding.decode_image`, and carries each image's index through the pipeline: a
file that cannot be decoded is dropped by index and reported, never shifting another
image's label.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np

from .decoding import Headers, Skip, decode_image, read_headers, read_regular_file, why_undecodable
from .listing import DEFAULT_MAX_PIXELS, DataSource, tfds_records
from .photo_ids import photo_path

Images = Union[DataSource, Sequence[str]]  # a listing, or image paths


def _paths(images: Images) -> list[str] | None:
    """The file paths behind ``images``; None for a TFDS source (its images are records)."""
    if isinstance(images, DataSource):
        return images.paths() if images.kind == "folder" else None
    return [str(p) for p in images]


def _max_pixels(images: Images) -> int | None:
    return images.max_pixels if isinstance(images, DataSource) else DEFAULT_MAX_PIXELS


def headers_for(images: Images, image_size: int, indices=None) -> Headers:
    """The headers of the given rows (all when None); a TFDS source has none to read."""
    paths = _paths(images)
    if paths is None:
        return Headers.unread(len(images))
    return read_headers(paths, image_size, max_pixels=_max_pixels(images), rows=indices)


def _tfds_encoded(source: DataSource, indices):
    """A ``tf.data.Dataset`` of (index, encoded bytes) of the given rows of a TFDS source."""
    import tensorflow as tf

    indices = np.asarray(indices)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(source.ids), tf.range(len(source), dtype=tf.int64)),
        default_value=-1)
    wanted = tf.constant(np.isin(np.arange(len(source)), indices))
    ds, _ = tfds_records(source.location, source.tfds_dir)

    def indexed(example):
        return table.lookup(example["tfds_id"]), example["image"]

    def is_wanted(i, _):
        return tf.logical_and(i >= 0, tf.gather(wanted, tf.maximum(i, 0)))

    return ds.map(indexed).filter(is_wanted)


READ_BATCH = 16


def _read_files(paths) -> np.ndarray:
    """The bytes of each path (no bytes where it is not a regular file or cannot be read)."""
    return np.array([read_regular_file(p) for p in paths], dtype=object)


def decoded_images(images: Images, image_size: int, *, indices=None, headers: Headers | None = None):
    """A ``tf.data.Dataset`` of (index, float32 image) with decoding in parallel.

    Undecodable images are dropped, and so are the rows ``headers`` refuses (over the
    pixel limit); the index says which row each image is, so a caller knows exactly what
    was skipped (see :func:`why_skipped`) and labels never shift.

    Args:
        headers: from :func:`headers_for` (read here when None).
    """
    import tensorflow as tf

    indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    if headers is None:
        headers = headers_for(images, image_size, indices)
    if headers.refused:
        indices = indices[~np.isin(indices, list(headers.refused))]
    # Per-image branches cost throughput: only when some file needs them.
    orientation = tf.constant(headers.orientation) if (headers.orientation[indices] != 1).any() else None
    dct_shift = tf.constant(headers.dct_shift) if headers.dct_shift[indices].any() else None
    # One filter for all when the headers agree; else decided per image from its decoded size.
    filters = set(headers.antialias[indices].tolist())
    antialias = bool(min(filters)) if len(filters) == 1 and 2 not in filters else None

    def decode(i, data):  # named: AutoGraph cannot find the source of lambdas on nearby lines
        return i, decode_image(data, image_size, orientation=1 if orientation is None else tf.gather(orientation, i),
                               dct_shift=0 if dct_shift is None else tf.gather(dct_shift, i), antialias=antialias)

    paths = _paths(images)
    if paths is not None:
        # The bytes are read by open_regular (a regular file, opened once, without blocking), in Python:
        # READ_BATCH files a call, so the call's cost is spread over them, then decoded in parallel.
        ds = tf.data.Dataset.from_tensor_slices((indices, [paths[i] for i in indices.tolist()]))

        def read(i, batch):
            data = tf.numpy_function(_read_files, [batch], tf.string, stateful=False)
            data.set_shape(batch.shape)
            return i, data

        ds = ds.batch(READ_BATCH).map(read, num_parallel_calls=2, deterministic=True).unbatch()
        ds = ds.map(decode, num_parallel_calls=os.cpu_count() or 2, deterministic=True)
    else:
        ds = _tfds_encoded(images, indices).map(decode, num_parallel_calls=os.cpu_count() or 2,
                                                 deterministic=True)
    return ds.ignore_errors()


def why_skipped(images: Images, index: int) -> Skip:
    """Why one row is not in the pipeline's output (re-tried eagerly, for the report).

    Only that row's file is looked at: called once per skipped image, it must not list
    the whole dataset each time.
    """
    if isinstance(images, DataSource) and images.kind == "folder":
        path = str(photo_path(images.location, images.ids[index]))
    elif not isinstance(images, DataSource):
        path = str(images[index])
    else:
        path = None
    if path is not None:
        refused = read_headers([path], 8, max_pixels=_max_pixels(images)).refused
        return refused[0] if 0 in refused else why_undecodable(path=path)
    for _, data in _tfds_encoded(images, [index]):
        return why_undecodable(data=data.numpy())
    return Skip("unreadable", "record not found")


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


def image_batches(images: Images, image_size: int, *, batch_size: int, indices=None,
                  headers: Headers | None = None):
    """Batches of (indices, images) in listing order, prefetched: extraction's input."""
    return fixed_threads(decoded_images(images, image_size, indices=indices,
                                        headers=headers).batch(batch_size).prefetch(2))


def _rounded(ds):
    """Images as the cache keeps them (uint8), so train, val and test see the same pixels."""
    import tensorflow as tf

    def to_uint8(i, image):
        return i, tf.cast(tf.round(image), tf.uint8)

    return ds.map(to_uint8)


def labelled_batches(source: DataSource, indices, *, image_size: int, batch_size: int, sigmoid: bool,
                     shuffle: bool = False, seed: int = 0):
    """(image, label) batches of the given rows; decoded once, then kept in memory: training's input.

    The decoded, resized images are cached by the pipeline (uint8, ~150 KB an image at
    224 px), so epochs after the first do not decode JPEGs again.
    """
    import tensorflow as tf

    labels = tf.constant(source.labels.astype(np.float32 if sigmoid else np.int64))
    ds = _rounded(decoded_images(source, image_size, indices=indices)).cache()
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)

    def pair(i, image):
        label = tf.gather(labels, i)
        return tf.cast(image, tf.float32), (label[None] if sigmoid else label)

    return fixed_threads(ds.map(pair).batch(batch_size).prefetch(2))


def indexed_batches(images: Images, indices, *, image_size: int, batch_size: int):
    """(index, image) batches in listing order, rounded as for training: scoring's and prediction's input."""
    import tensorflow as tf

    def to_float(i, image):
        return i, tf.cast(image, tf.float32)

    ds = _rounded(decoded_images(images, image_size, indices=indices)).map(to_float)
    return fixed_threads(ds.batch(batch_size).prefetch(2))


def activation_batches(activations, labels, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                       views: bool = False):
    """(activations, label) batches from an array (or memory-mapped file) of activations.

    ``views``: ``activations`` is (n, K, ...), K cached views of each row; a pass over the rows takes one view of
    each, a different one each pass (each row goes through its K views in a seeded order, then again).
    """
    import tensorflow as tf

    n, shape = len(activations), activations.shape[2:] if views else activations.shape[1:]
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if views:
        k = activations.shape[1]
        order = np.random.default_rng(seed).permuted(np.tile(np.arange(k), (n, 1)), axis=1)
        taken = np.zeros(n, dtype=np.int64)  # views of each row handed out so far

    def gather(idx):
        if not views:
            return activations[idx], labels[idx]
        chosen = order[idx, taken[idx] % k]
        taken[idx] += 1
        return np.asarray(activations[idx, chosen]), labels[idx]  # row idx[j]'s view chosen[j]

    def load(idx):
        x, y = tf.numpy_function(gather, [idx], (tf.float32, tf.as_dtype(labels.dtype)))
        x.set_shape((None, *shape))
        y.set_shape((None, *labels.shape[1:]))
        return x, y

    return fixed_threads(ds.batch(batch_size).map(load).prefetch(2))
