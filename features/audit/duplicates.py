"""Duplicates and leakage from a cache: the same file, the same pixels, and near copies by the cosine
similarity of the embeddings; a pair across train or val and test is a leak.

Exact copies are found two ways: the same file bytes (a SHA-256 of each photo, where the photos are
at hand) and identical embeddings (the network saw the same pixels: a re-saved copy of the same
image, or one decoded the same). Near copies (re-encodings, crops, resizes, burst shots) are pairs
whose embeddings' cosine similarity is at least a threshold; :data:`NEAR` is the default, chosen from
measurement (docs/audit.md and ``benchmarks/audit_planted.py``).
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
BLOCK = 1024  # rows of the similarity matrix computed at a time


@dataclass(frozen=True)
class Pair:
    a: int  # rows of the cache, a < b
    b: int
    similarity: float
    kind: str  # "same file", "same pixels" or "near"


def normalised(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), float32."""
    x = np.asarray(embeddings, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def neighbours(unit: np.ndarray, threshold: float, block: int = BLOCK):
    """Every pair (i < j) with cosine similarity >= ``threshold``, and each row's nearest other row.

    Exact: the similarity matrix a block of rows at a time (memory ``block`` x rows).

    Returns:
        (pairs as (i, j, similarity) arrays, nearest row per row, its similarity)
    """
    n = len(unit)
    nearest, nearest_sim = np.full(n, -1, np.int64), np.full(n, -np.inf, np.float32)
    found_i, found_j, found_s = [], [], []
    for start in range(0, n, block):
        sims = unit[start:start + block] @ unit.T
        rows = np.arange(start, min(start + block, n))
        sims[rows - start, rows] = -np.inf  # a row is not its own neighbour
        if n > 1:
            nearest[rows] = sims.argmax(1)
            nearest_sim[rows] = sims[rows - start, nearest[rows]]
        i, j = np.nonzero(sims >= threshold)
        keep = rows[i] < j
        found_i.append(rows[i][keep])
        found_j.append(j[keep])
        found_s.append(sims[i[keep], j[keep]])
    pairs = tuple(np.concatenate(parts).astype(dtype) for parts, dtype in
                  ((found_i, np.int64), (found_j, np.int64), (found_s, np.float32)))
    return pairs, nearest, nearest_sim


def _groups(keys) -> list[list[int]]:
    """Rows sharing a key, groups of two or more, each in row order."""
    by_key: dict = {}
    for row, key in enumerate(keys):
        if key is not None:
            by_key.setdefault(key, []).append(row)
    return [rows for rows in by_key.values() if len(rows) > 1]


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


def find_duplicates(embeddings: np.ndarray, threshold: float = NEAR, digests=None) -> list[Pair]:
    """Pairs of rows that are copies, most similar first (exact copies first among equals).

    Args:
        digests: each row's file digest (:func:`file_digests`), or None where the files are not at hand.
    """
    unit = normalised(embeddings)
    kinds: dict[tuple[int, int], str] = {}
    for kind, keys in (("same pixels", [np.asarray(row).tobytes() for row in np.asarray(embeddings)]),
                       ("same file", digests or [])):
        for rows in _groups(keys):
            for x, a in enumerate(rows):
                for b in rows[x + 1:]:
                    kinds[(a, b)] = kind  # the same file is said over the same pixels
    (i, j, s), _, _ = neighbours(unit, threshold)
    sims = {(int(a), int(b)): float(v) for a, b, v in zip(i, j, s)}
    pairs = [Pair(a, b, min(1.0, sims.get((a, b), float(unit[a] @ unit[b]))), kind) for (a, b), kind in kinds.items()]
    pairs += [Pair(a, b, min(1.0, v), "near") for (a, b), v in sims.items() if (a, b) not in kinds]
    order = {"same file": 0, "same pixels": 1, "near": 2}
    return sorted(pairs, key=lambda p: (-p.similarity, order[p.kind], p.a, p.b))


def leaked_test_rows(pairs: list[Pair], splits: np.ndarray) -> np.ndarray:
    """Test rows with a copy in train or val (sorted): the photos a test score has partly seen."""
    splits = np.asarray(splits)
    leaked = set()
    for p in pairs:
        for here, there in ((p.a, p.b), (p.b, p.a)):
            if splits[here] == TEST and splits[there] != TEST:
                leaked.add(here)
    return np.array(sorted(leaked), np.int64)
