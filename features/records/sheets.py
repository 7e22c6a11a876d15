"""Contact sheets: a grid of thumbnails, each with its caption (file name, labels, score), as a PNG.

A photo that is gone, or no longer a photo, is drawn as a grey tile that says so; the sheet is
still drawn.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.decoding import DEFAULT_MAX_PIXELS
from ..io import read_regular

THUMB = 160  # pixels, the longer side
COLUMNS = 6  # tiles a row of a grid
NAME = 34  # characters of a file name in a caption


@dataclass(frozen=True)
class Tile:
    path: Path | None  # the photo; None where the cache's source is not a folder at hand
    caption: str  # lines joined by "\n"


def short_name(text: str, width: int = NAME) -> str:
    """A caption's file name: its end kept where it is too long."""
    return text if len(text) <= width else "..." + text[-(width - 3):]


def grid(tiles: list[Tile], columns: int = COLUMNS) -> list[list[Tile]]:
    """Tiles in rows of ``columns``, for :func:`draw_sheet`."""
    return [tiles[i:i + columns] for i in range(0, len(tiles), columns)]


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
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
            return np.asarray(im), ""
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, "no longer a photo"


def draw_sheet(rows: list[list[Tile]], path, title: str = "", size: int = THUMB) -> Path:
    """A sheet of ``rows`` (each a list of tiles drawn side by side: a pair, or a row of a grid) as a PNG."""
    from matplotlib.figure import Figure

    from .plots import save_png

    columns = max((len(r) for r in rows), default=1)
    inches = size / 80
    fig = Figure(figsize=(columns * inches, max(1, len(rows)) * (inches + 0.55) + (0.4 if title else 0)))
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
                ax.imshow(image)
            ax.set_title(tile.caption, fontsize=6.5, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    return Path(path)


TOP_LOSSES = 18  # photos on a run's top-losses sheet
CONFUSED = 5  # class pairs named on it


def top_losses(ids, y_true, proba, class_names, photo_root, path, top: int = TOP_LOSSES) -> dict:
    """The test photos a model got wrong with the highest confidence, and the class pairs it confused most,
    drawn as a sheet at ``path`` where any photo is wrong (nothing is drawn where none is).

    Args:
        photo_root: the folder the ids are relative to; None where the photos are not a folder (TFDS).

    Returns:
        {"top_losses": [{"id", "true", "predicted", "probability"}], "confused": [{"true", "predicted",
        "photos"}]}, most confident and most confused first.
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
    if losses:
        root = None if photo_root is None else Path(photo_root)
        tiles = [Tile(None if root is None else root / loss["id"],
                      f"{short_name(loss['id'])}\n"
                      f"true {loss['true']}\npredicted {loss['predicted']} {loss['probability']:.3f}")
                 for loss in losses]
        most = "; ".join(f"{c['true']} as {c['predicted']} {c['photos']}" for c in confused)
        draw_sheet(grid(tiles), path,
                   f"Wrong with the highest confidence: {len(wrong)} of {len(y_true)} test photos wrong\n"
                   f"most confused: {most}")
    return {"top_losses": losses, "confused": confused}
