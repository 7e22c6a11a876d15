"""Contact sheets: a grid of thumbnails, each with its caption (file name, labels, score), as a PNG.

A photo that is gone, or no longer a photo, is drawn as a grey tile that says so; the sheet is
still drawn.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.decoding import DEFAULT_MAX_PIXELS
from ..io import read_regular

THUMB = 160  # pixels, the longer side


@dataclass(frozen=True)
class Tile:
    path: Path | None  # the photo; None where the cache's source is not a folder at hand
    caption: str  # lines joined by "\n"


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
