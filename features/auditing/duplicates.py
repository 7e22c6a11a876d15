"""Duplicates and leakage from a cache: the same file, the same pixels, and near copies by the cosine
similarity of the embeddings; a test photo with a copy in train or val is a leak.

Exact copies are found two ways: the same file bytes (a SHA-256 of each photo, where the photos are
at hand) and identical embeddings (the network saw the same pixels: a re-saved copy of the same
image, or one decoded the same). Each is reported as a *group*: its photos, however many, never
every pair inside it (a scraped folder with one placeholder image 5,000 times is one group of 5,000,
not 12.5 million pairs). Near copies (re-encodings, crops, resizes, burst shots) are pairs whose
embeddings' cosine similarity is at least a threshold; :data:`NEAR` is the default, chosen from
measurement (docs/audit.md and ``benchmarks/audit_planted.py``). A group's photos are one photo to the
near search, and at most :data:`PAIRS` near pairs are kept, the most similar first, with the count of
all of them. Leakage needs no pair list: each test photo's closest photo outside test.

Memory is bounded by the photos, not their pairs: the similarity matrix is computed :func:`block_rows`
rows at a time (at most :data:`CELLS` similarities at once) and only the kept pairs outlive a block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.splits import TEST

# The default cosine threshold for a near copy, measured on Lite0's embeddings of the shared flowers with
# copies planted (benchmarks/audit_planted.py, docs/audit.md): at 0.90, 9 of 10 JPEG re-encodings at quality
# 50 and 8 of 10 crops to 85% are found, and 82 of the 3,120 photos have a neighbour above it (burst shots of
# the same flower, mostly); at 0.95, 4 and 1 of 10 and 18 photos.
NEAR = 0.90
PAIRS = 1000  # near pairs kept, the most similar first; the rest are counted
CELLS = 1 << 22  # similarities computed at a time (16 MB of float32; about 60 MB at the peak of a block)
SAME_FILE, SAME_PIXELS = "same file", "same pixels"


@dataclass(frozen=True)
class Pair:
    a: int  # rows of the cache, a < b
    b: int
    similarity: float


@dataclass(frozen=True)
class Group:
    kind: str  # SAME_FILE or SAME_PIXELS
    rows: tuple[int, ...]  # two or more rows of the cache, in row order


@dataclass(frozen=True)
class Duplicates:
    groups: list[Group]  # exact copies; groups holding test and other photos first, then the largest
    near: list[Pair]  # at most PAIRS near pairs, most similar first
    near_total: int  # near pairs in all (of the groups' first photos and the other photos)


def normalised(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), float32."""
    x = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def block_rows(columns: int) -> int:
    """Rows of a similarity block against ``columns`` columns: at most :data:`CELLS` cells."""
    return max(1, CELLS // max(columns, 1))


def _top(i, j, s, limit: int):
    """The ``limit`` largest similarities' (i, j, s)."""
    if len(s) <= limit:
        return i, j, s
    keep = np.argpartition(-s, limit - 1)[:limit]
    return i[keep], j[keep], s[keep]


def neighbours(unit: np.ndarray, threshold: float, *, limit: int = PAIRS, apart=None, block: int | None = None):
    """The ``limit`` most similar pairs (i < j) with cosine similarity >= ``threshold``, how many there are in all,
    and each row's nearest other row.

    Exact: the similarity matrix a block of rows at a time (memory ``block`` x rows; the kept pairs at most
    ``limit`` between blocks, however many pairs pass the threshold).

    Args:
        apart: a label per row, or None; two rows with the same label >= 0 are not a pair (copies said
            elsewhere) but are still each other's nearest.

    Returns:
        ((i, j, similarity) arrays of the kept pairs, most similar first; pairs in all; nearest row per row;
        its similarity)
    """
    n = len(unit)
    block = block or block_rows(n)
    nearest, nearest_sim = np.full(n, -1, np.int64), np.full(n, -np.inf, np.float32)
    kept = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    total = 0
    columns = np.arange(n)
    apart = None if apart is None else np.asarray(apart)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        sims = unit[rows] @ unit.T
        sims[rows - start, rows] = -np.inf  # a row is not its own neighbour
        if n > 1:
            nearest[rows] = sims.argmax(1)
            nearest_sim[rows] = sims[rows - start, nearest[rows]]
        hit = (sims >= threshold) & (columns[None, :] > rows[:, None])
        if apart is not None:
            label = apart[rows][:, None]
            hit &= ~((label == apart[None, :]) & (label >= 0))
        count = int(np.count_nonzero(hit))
        total += count
        if count > limit:  # only the block's `limit` most similar can be kept: the index arrays stay small
            values = sims[hit]
            hit &= sims >= np.partition(values, count - limit)[count - limit]
            del values
        i, j = np.nonzero(hit)
        del hit
        found = (rows[i], j, sims[i, j])
        del sims, i, j
        kept = _top(*(np.concatenate(pair) for pair in zip(kept, found)), limit)
    order = np.lexsort((kept[1], kept[0], -kept[2]))
    return tuple(part[order] for part in kept), total, nearest, nearest_sim


def _groups(keys) -> list[list[int]]:
    """Rows sharing a key, groups of two or more, each in row order."""
    by_key: dict = {}
    for row, key in enumerate(keys):
        if key is not None:
            by_key.setdefault(key, []).append(row)
    return [rows for rows in by_key.values() if len(rows) > 1]


def _labels(groups: list[list[int]], n: int) -> np.ndarray:
    """Each row's group number, -1 outside every group."""
    label = np.full(n, -1, np.int64)
    for g, rows in enumerate(groups):
        label[rows] = g
    return label


def file_digests(paths) -> list[str | None]:
    """SHA-256 of each photo's bytes; None where the file is gone or cannot be read."""
    from ..io import file_sha256

    digests = []
    for path in paths:
        try:
            digests.append(None if path is None else file_sha256(path))
        except OSError:
            digests.append(None)
    return digests


def exact_groups(embeddings: np.ndarray, digests=None) -> tuple[list[Group], np.ndarray, np.ndarray]:
    """Groups of the same file and of the same pixels (a same-pixels group that is one same-file group says
    nothing more, and is left out); the rows that repeat an earlier row's pixels; each row's same-file group
    number (-1 where it has none)."""
    embeddings = np.asarray(embeddings)
    pixels = _groups(row.tobytes() for row in embeddings)
    files = _groups(digests or [])
    file_label = _labels(files, len(embeddings))
    groups = [Group(SAME_FILE, tuple(rows)) for rows in files]
    groups += [Group(SAME_PIXELS, tuple(rows)) for rows in pixels
               if not (file_label[rows[0]] >= 0 and (file_label[rows] == file_label[rows[0]]).all())]
    repeats = np.zeros(len(embeddings), bool)
    for rows in pixels:
        repeats[rows[1:]] = True
    return groups, repeats, file_label


def find_duplicates(embeddings: np.ndarray, threshold: float = NEAR, digests=None, *, splits=None,
                    limit: int = PAIRS) -> Duplicates:
    """The copies among the rows: exact groups, and near pairs (most similar first).

    Args:
        digests: each row's file digest (:func:`file_digests`), or None where the files are not at hand.
        splits: each row's split, or None; groups holding a test photo and another photo come first.
        limit: near pairs kept.
    """
    embeddings = np.asarray(embeddings)
    groups, repeats, file_label = exact_groups(embeddings, digests)
    # one photo of each same-pixels group goes to the near search: its copies are at the same place
    firsts = np.flatnonzero(~repeats)
    (i, j, s), total, _, _ = neighbours(normalised(embeddings[firsts]), threshold, limit=limit,
                                        apart=file_label[firsts])
    near = [Pair(int(firsts[a]), int(firsts[b]), min(1.0, float(v))) for a, b, v in zip(i, j, s)]
    is_test = np.zeros(len(embeddings), bool) if splits is None else np.asarray(splits) == TEST

    def leaks(g: Group) -> bool:  # a test photo and another photo in one group
        return 0 < int(is_test[list(g.rows)].sum()) < len(g.rows)

    groups.sort(key=lambda g: (not leaks(g), -len(g.rows), g.rows[0]))
    return Duplicates(groups=groups, near=near, near_total=int(total))


def leaked_test_rows(embeddings: np.ndarray, splits: np.ndarray, *, threshold: float = NEAR,
                     groups: list[Group] = ()) -> np.ndarray:
    """Test rows with a copy in train or val (sorted): the photos a test score has partly seen.

    A copy is an exact group's other photo, or a photo outside test at cosine similarity >= ``threshold``:
    each test photo's closest photo outside test decides, so no pair list is needed.
    """
    splits = np.asarray(splits)
    test = np.flatnonzero(splits == TEST)
    other = np.flatnonzero(splits != TEST)
    leaked = set()
    for g in groups:
        rows = np.asarray(g.rows)
        if (splits[rows] != TEST).any():
            leaked.update(int(r) for r in rows[splits[rows] == TEST])
    if len(test) and len(other):
        unit = normalised(embeddings)
        theirs = unit[other]
        block = block_rows(len(other))
        for start in range(0, len(test), block):
            rows = test[start:start + block]
            closest = (unit[rows] @ theirs.T).max(1)
            leaked.update(int(r) for r in rows[closest >= threshold])
    return np.array(sorted(leaked), np.int64)
