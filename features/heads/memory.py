"""Whether an in-memory head can hold a cache's embeddings: the one memory policy of the heads."""

from __future__ import annotations

from ..cache import read_attrs
from ..errors import UsageError
from ..memory import available_memory
from .registry import HEADS

# Bytes an in-memory head needs per byte of embeddings: the matrix, its split copies,
# train + val stacked for the refit and the scaler's output.
MEMORY_FACTOR = 4


def fits_in_memory(paths, available: int | None = None) -> bool:
    """Whether an in-memory head can hold these caches' embeddings (and its copies of them)."""
    attrs = [read_attrs(p) for p in paths]
    size = int(attrs[0]["n_images"]) * sum(int(a["embedding_dim"]) for a in attrs) * 4
    return size * MEMORY_FACTOR <= (available_memory() if available is None else available)


def check_fits_in_memory(paths, head: str, available: int | None = None) -> None:
    """Refuse to load caches whose embeddings an in-memory head that cannot stream could not hold.

    Raises:
        UsageError: naming the size, the memory available and the heads that stream.
    """
    if fits_in_memory(paths, available):
        return
    attrs = [read_attrs(p) for p in paths]
    rows = int(attrs[0]["n_images"])
    size = rows * sum(int(a["embedding_dim"]) for a in attrs) * 4
    available = available_memory() if available is None else available
    streaming = [name for name, spec in HEADS.items() if spec.streams]
    raise UsageError(f"{paths[0]}: {rows} rows of embeddings take {size / 1e9:.1f} GB; {{head}} {head} holds "
                     f"them in memory, about {size * MEMORY_FACTOR / 1e9:.1f} GB with its copies, and "
                     f"{available / 1e9:.1f} GB is available: train {' or '.join(f'{{head={n}}}' for n in streaming)}, "
                     "which read them a block at a time")
