"""Contact sheets: a grid of thumbnails, each with its caption (file name, labels, score), as a PNG.

A photo that is gone, or no longer a photo, is drawn as a grey tile that says so; the sheet is
still drawn. A tile may carry a heatmap (:mod:`features.serve.explain`), drawn over its photo
(:func:`overlay`).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.decoding import DEFAULT_MAX_PIXELS
from ..data.photo_ids import photo_path
from ..io import read_regular

THUMB = 160  # pixels, the longer side
COLUMNS = 6  # tiles a row of a grid
NAME = 34  # characters of a file name in a caption


@dataclass(frozen=True)
class Tile:
    path: Path | None  # the photo; None where the cache's source is not a folder at hand
    caption: str  # lines joined by "\n"
    heatmap: np.ndarray | None = None  # a class activation map on the network's grid, drawn over the photo


def short_name(text: str, width: int = NAME) -> str:
    """A caption's file name: its end kept where it is too long."""
    return text if len(text) <= width else "..." + text[-(width - 3):]


def grid(tiles: list[Tile], columns: int = COLUMNS) -> list[list[Tile]]:
    """Tiles in rows of ``columns``, for :func:`draw_sheet`."""
    return [tiles[i:i + columns] for i in range(0, len(tiles), columns)]


def _eight_bit_rgb(im):
    """``im`` as 8-bit RGB, a 16-bit grayscale photo (Pillow's "I;16" or "I") scaled to 8 bits as the network's
    decoder scales it (``convert("RGB")`` clips it instead: a 16-bit PNG drew almost white)."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        levels = np.asarray(im, np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def thumbnail(path, size: int = THUMB) -> tuple[np.ndarray | None, str]:
    """(RGB uint8 thumbnail, "") or (None, why there is none)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path is None:
        return None, "photo not at hand"
    try:
        data = read_regular(path, limit=1 << 28)
    except FileNotFoundError:
        return None, "photo gone since extraction"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or type(exc).__name__}"
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > DEFAULT_MAX_PIXELS:
                return None, "too many pixels"
            im = _eight_bit_rgb(ImageOps.exif_transpose(im))
            im.thumbnail((size, size))
            return np.asarray(im), ""
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, "no longer a photo"


HEAT_ALPHA = 0.45  # the colour map's weight over the photo


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """``image`` (h, w, 3 uint8) with the positive part of ``heatmap`` (any grid: the network saw the photo
    squashed to its square, so the grid stretches over the photo as it is) in a colour map, scaled to its
    largest value, as CAM and Grad-CAM draw theirs; a map with no positive part leaves the photo as it is."""
    from matplotlib import colormaps
    from PIL import Image

    positive = np.clip(np.nan_to_num(np.asarray(heatmap, np.float64)), 0, None)
    top = positive.max() if positive.size else 0.0
    if not top > 0:
        return image
    scaled = (positive / top).astype(np.float32)
    h, w = image.shape[:2]
    big = np.clip(np.asarray(Image.fromarray(scaled).resize((w, h), Image.Resampling.BILINEAR)), 0, 1)
    colours = colormaps["jet"](big)[..., :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)


def draw_sheet(rows: list[list[Tile]], path, *, title: str = "", size: int = THUMB) -> Path:
    """A sheet of ``rows`` (each a list of tiles drawn side by side: a pair, or a row of a grid) as a PNG."""
    from matplotlib.figure import Figure

    from .plots import save_png

    columns = max((len(r) for r in rows), default=1)
    inches = size / 80
    if title:  # wrapped to the sheet's width (about 12 characters an inch at this size)
        import textwrap

        width = max(20, int(columns * inches * 12))
        title = "\n".join(textwrap.fill(line, width) for line in title.splitlines())
    lines = len(title.splitlines())
    fig = Figure(figsize=(columns * inches, max(1, len(rows)) * (inches + 0.55) + 0.2 + 0.17 * lines))
    axes = np.atleast_2d(fig.subplots(max(1, len(rows)), columns, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            ax = axes[r, c]
            image, why = thumbnail(tile.path, size)
            if image is None:
                ax.imshow(np.full((size, size, 3), 200, np.uint8))
                ax.text(size / 2, size / 2, why, ha="center", va="center", fontsize=7, wrap=True)
            else:
                ax.imshow(image if tile.heatmap is None else overlay(image, tile.heatmap))
            ax.set_title(tile.caption, fontsize=6.5, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    return Path(path)


TOP_LOSSES = 18  # photos on a run's top-losses sheet
CONFUSED = 5  # class pairs named on it


def worst(ids, y_true, *, proba, class_names, top: int = TOP_LOSSES) -> dict:
    """The test photos a model got wrong with the highest confidence, and the class pairs it confused most.

    Returns:
        {"top_losses": [{"id", "true", "predicted", "probability"}], "confused": [{"true", "predicted",
        "photos"}], "wrong": how many are wrong, "photos": how many were scored}, most confident and most
        confused first.
    """
    proba = np.asarray(proba)
    y_true = np.asarray(y_true, np.int64)
    predicted = proba.argmax(1)
    wrong = np.nonzero(predicted != y_true)[0]
    wrong = wrong[np.argsort(-proba[wrong, predicted[wrong]], kind="stable")]
    losses = [{"id": str(ids[r]), "true": class_names[y_true[r]], "predicted": class_names[predicted[r]],
               "probability": float(proba[r, predicted[r]])} for r in wrong[:top]]
    pairs = Counter(zip(y_true[wrong].tolist(), predicted[wrong].tolist()))
    confused = [{"true": class_names[t], "predicted": class_names[p], "photos": n}
                for (t, p), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:CONFUSED]]
    return {"top_losses": losses, "confused": confused, "wrong": int(len(wrong)), "photos": int(len(y_true))}


def draw_top_losses(found: dict, photo_root, *, path, heatmaps=None, note: str = "") -> None:
    """:func:`worst`'s photos as a sheet at ``path`` (nothing is drawn where none is wrong).

    Args:
        photo_root: the folder the ids are relative to; None where the photos are not a folder (TFDS).
        heatmaps: {id: map of its predicted class} drawn over the photos that have one.
        note: a line added to the title (how the heatmaps were made).
    """
    losses, confused = found["top_losses"], found["confused"]
    if not losses:
        return
    root, heatmaps = None if photo_root is None else Path(photo_root), heatmaps or {}
    tiles = [Tile(None if root is None else photo_path(root, loss["id"]),
                  f"{short_name(loss['id'])}\n"
                  f"true {loss['true']}\npredicted {loss['predicted']} {loss['probability']:.3f}",
                  heatmaps.get(loss["id"]))
             for loss in losses]
    most = "; ".join(f"{c['true']} as {c['predicted']} {c['photos']}" for c in confused)
    draw_sheet(grid(tiles), path,
               title=f"Wrong with the highest confidence: {found['wrong']} of {found['photos']} test photos wrong\n"
               f"most confused: {most}" + (f"\n{note}" if note else ""))


def top_losses(ids, y_true, *, proba, class_names, photo_root, path, top: int = TOP_LOSSES) -> dict:
    """:func:`worst` drawn as a sheet at ``path`` (see :func:`draw_top_losses`); returns :func:`worst`'s
    losses and confused pairs."""
    found = worst(ids, y_true, proba=proba, class_names=class_names, top=top)
    draw_top_losses(found, photo_root, path=path)
    return {"top_losses": found["top_losses"], "confused": found["confused"]}
