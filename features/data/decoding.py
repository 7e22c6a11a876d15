"""Decoding: file headers, then pixels, the same way in every process.

Before decoding, :func:`read_headers` reads each file's header: its EXIF orientation
(applied), its pixel count (files over the limit are refused, never decoded) and, for
large JPEGs, the DCT scale to decode at. :func:`decode_image` turns encoded bytes into a
square float32 image; the tf.data pipelines (:mod:`.pipelines`) map it over a dataset,
and :func:`decode_paths` runs it on a batch of paths in any process (a worker needs no
:class:`~.listing.DataSource`), with the same pixels as a result.

The bytes are read by :func:`read_regular_file`: each file opened once, without blocking,
checked to be a regular file on the open descriptor, and read up to the size it had then,
so a file swapped for a device or a FIFO after its header was read is skipped, not read
without end. A file that cannot be used is a :class:`Skip`: its kind (one of
:data:`SKIP_KINDS`) is decided by what went wrong, never by the wording of a library's message.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import numpy as np

from ..io import NotRegularFile, read_regular, regular_file, what_it_is
from .listing import DEFAULT_MAX_PIXELS

RESIZE_METHOD = ("EXIF orientation applied; JPEGs at least twice the size DCT-downscaled while decoding; "
                 "bilinear (antialiased when shrinking over 2x), whole image squashed to a square")
SKIP_KINDS = ("empty file", "over the pixel limit", "truncated or corrupt", "not an image", "not a regular file",
              "unreadable")


@dataclass(frozen=True)
class Skip:
    """Why one image is left out: ``kind`` (one of :data:`SKIP_KINDS`) and the reason in words."""

    kind: str
    reason: str


@dataclass(frozen=True)
class SkippedImage:
    """An image left out: its position (in the listing, or among the photos given to predict), its id (as the
    cache names it, or the path given), and why. The one shape a skipped image has: in the cache, an
    extraction's result, predict's output, their JSON."""

    index: int
    id: str
    why: Skip

    @property
    def kind(self) -> str:
        return self.why.kind

    @property
    def reason(self) -> str:
        return self.why.reason

    def as_dict(self) -> dict:
        return {"index": self.index, "id": self.id, "kind": self.kind, "reason": self.reason}


def open_regular(path) -> bytes:
    """The bytes of a regular file: :func:`features.io.read_regular`, the one guarded reader (opened once,
    without blocking, checked on the descriptor, read up to its size).

    Raises:
        NotRegularFile: a device, a FIFO, a socket or a folder (a link to one is followed).
        OSError: it cannot be opened or read.
    """
    return read_regular(path)


def read_regular_file(path) -> bytes:
    """:func:`open_regular`, or no bytes for whatever cannot be read that way (its decode then
    fails, and :func:`why_undecodable` says why): what the pipelines read files with."""
    try:
        return open_regular(path)
    except OSError:
        return b""


def decode_image(data, image_size: int, *, orientation=1, dct_shift=0, antialias=None):
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


@dataclass(kw_only=True)
class Headers:
    """What the file headers say, one entry per path (defaults where no header was read).

    Attributes:
        orientation: uint8 EXIF orientation, 1 (upright) when absent.
        dct_shift: uint8, JPEGs at least twice ``image_size`` on their short side are
            decoded at 1/2**shift (0 for any other file).
        antialias: uint8, 1 when the resize shrinks the (DCT-scaled) image more than 2x,
            0 when not, 2 when the header could not tell.
        refused: {row: Skip} for files over the pixel limit: never decoded.
    """

    orientation: np.ndarray
    dct_shift: np.ndarray
    antialias: np.ndarray
    refused: dict

    @classmethod
    def unread(cls, n: int) -> "Headers":
        """Headers of ``n`` images whose files cannot be read ahead (TFDS records)."""
        return cls(orientation=np.ones(n, np.uint8), dct_shift=np.zeros(n, np.uint8),
                   antialias=np.full(n, 2, np.uint8), refused={})

    def antialias_of(self, row: int):
        """The resize filter of one row: True, False, or None (decide from the decoded size)."""
        value = int(self.antialias[row])
        return None if value == 2 else bool(value)


def _not_regular(path) -> str | None:
    """Why ``path`` is not a regular file to read (None when it is one).

    A device (a link to ``/dev/zero`` reads without end), a FIFO (a read waits for a
    writer forever) or a socket is never opened as an image.
    """
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # the reader reports why it cannot be read
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file but {what_it_is(mode)}; only regular files are read as images"


def read_headers(paths, image_size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, rows=None,
                 dct_scaling: bool = True) -> Headers:
    """Read the headers of ``paths[i]`` for each i in ``rows`` (default: all); no pixel is decoded.

    Files with more than ``max_pixels`` pixels are refused: a small PNG can decode to
    gigabytes (a decompression bomb). A file Pillow cannot identify is left to the
    decoder, which gives the reason it fails.

    Returns:
        :class:`Headers` with one entry per path (rows not read keep the defaults).
    """
    from PIL import Image, UnidentifiedImageError

    headers = Headers.unread(len(paths))
    rows = range(len(paths)) if rows is None else np.asarray(rows, dtype=np.int64).tolist()
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the limit below is ours
    try:
        for i in rows:
            special = _not_regular(paths[i])
            if special:
                headers.refused[i] = Skip("not a regular file", special)
                continue
            try:
                with regular_file(paths[i]) as f, Image.open(f) as im:
                    width, height, fmt = im.width, im.height, im.format
                    orientation = im.getexif().get(0x0112, 1) if fmt in ("JPEG", "PNG", "WEBP") else 1
                    # The decoder decodes every frame of an animation (and keeps the first): they count.
                    frames = int(getattr(im, "n_frames", 1) or 1) if fmt == "GIF" else 1
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
                continue
            if max_pixels and width * height * frames > max_pixels:
                each = f" x {frames:,} frames" if frames > 1 else ""
                headers.refused[i] = Skip(
                    "over the pixel limit", f"{width}x{height}{each} = {width * height * frames:,} pixels is over the "
                    f"limit of {max_pixels:,} (a decompression bomb?); raise the pixel limit if it is genuine")
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


def decode_paths(paths, image_size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 dct_scaling: bool = True, threads: int | None = None):
    """Decode a batch of image files here and now: what a worker process calls.

    The same headers and :func:`decode_image` as the tf.data pipelines, so the pixels are
    the same as theirs. Files are decoded on ``threads`` threads (default: every core;
    TensorFlow's kernels release the GIL).

    Returns:
        (rows, images, skipped): int64 positions in ``paths`` that decoded, their float32
        (n, image_size, image_size, 3) images in 0-255, and {position: :class:`Skip`}
        for the others.
    """
    from concurrent.futures import ThreadPoolExecutor

    import tensorflow as tf

    headers = read_headers(paths, image_size, max_pixels=max_pixels, dct_scaling=dct_scaling)
    skipped = dict(headers.refused)
    todo = [i for i in range(len(paths)) if i not in skipped]

    def one(i):
        try:
            return decode_image(tf.constant(open_regular(paths[i])), image_size,
                                orientation=int(headers.orientation[i]), dct_shift=int(headers.dct_shift[i]),
                                antialias=headers.antialias_of(i)).numpy()
        except (tf.errors.OpError, ValueError, OSError):
            return None

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 2) as pool:
        decoded = list(pool.map(one, todo))
    rows, images = [], []
    for i, image in zip(todo, decoded):
        if image is None:
            skipped[i] = why_undecodable(path=paths[i])
        else:
            rows.append(i)
            images.append(image)
    images = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.float32)
    return np.asarray(rows, dtype=np.int64), images, skipped


def _format_recognised(data: bytes) -> bool:
    """Whether some image format claims these bytes (Pillow's plugins try each in turn).

    Only :class:`PIL.UnidentifiedImageError` says that none does; a format whose header
    then breaks off (a truncated file) raises another error, and counts as recognised.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except UnidentifiedImageError:
        return False
    except Exception:  # noqa: BLE001 - a plugin took the file, then failed on it
        return True


def why_undecodable(path=None, data: bytes | None = None) -> Skip:
    """Why one file (``path``) or record (``data``) cannot be decoded; tried again eagerly.

    The kind comes from what happened: the file could not be read ("unreadable"), it
    holds no bytes ("empty file"), no image format recognises its header ("not an
    image"), or its format is known but its data is not ("truncated or corrupt").
    """
    import tensorflow as tf

    if data is None:
        try:
            data = open_regular(path)
        except NotRegularFile as exc:
            return Skip("not a regular file", f"{exc.strerror}; only regular files are read as images")
        except OSError as exc:
            return Skip("unreadable", f"cannot read the file: {exc.strerror or exc}")
    if not data:
        return Skip("empty file", "empty file (0 bytes)")
    try:
        decode_image(tf.constant(data), 8)
    except Exception as exc:  # noqa: BLE001 - whatever TensorFlow raises, its text is the reason
        text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*", "",
                      str(getattr(exc, "message", exc))).strip()
        reason = (text.splitlines()[0] if text else type(exc).__name__)[:200]
        return Skip("truncated or corrupt" if _format_recognised(data) else "not an image", reason)
    return Skip("unreadable", "decoding failed in the pipeline only")
