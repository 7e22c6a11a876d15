"""Train/val/test splits: their names, the default fractions, and the seeded stratified split.

The one home of these facts: the store records split codes, the scripts' ``--split``
default and every function's default come from here.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = range(3)  # the codes stored per row (uint8), indices into SPLITS
DEFAULT_SPLIT = (0.70, 0.15, 0.15)
DEFAULT_SPLIT_TEXT = ",".join(f"{f:g}" for f in DEFAULT_SPLIT)


def split_code(name: str) -> int:
    """The stored code of a split name ("train", "val" or "test")."""
    return SPLITS.index(name)


def parse_split(text: str) -> tuple[float, float, float]:
    """Parse a split ("0.7,0.15,0.15" or "70/15/15") into fractions that sum to 1.

    Raises:
        UsageError: not three non-negative numbers, train is zero, or they do not add up.
    """
    parts = str(text).replace("/", ",").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(np.isfinite(v) and v >= 0 for v in values):
        raise UsageError(f"{{split}} {text}: give three non-negative fractions train,val,test "
                         "such as 0.7,0.15,0.15 or 70/15/15")
    total = sum(values)
    if abs(total - 1) > 1e-6 and abs(total - 100) > 1e-6:
        raise UsageError(f"{{split}} {text}: the fractions add up to {total:g}, not 1 (or 100)")
    fractions = tuple(v / total for v in values)
    if fractions[0] == 0:
        raise UsageError(f"{{split}} {text}: the train fraction must be above zero")
    return fractions


def describe_split(fractions, seed: int) -> str:
    """How a stratified split was made, for the record."""
    return f"stratified {'/'.join(f'{f:.2f}' for f in fractions)}, seed {seed}"


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


def complete_splits(splits: np.ndarray, labels: np.ndarray, *, fractions, seed: int) -> np.ndarray:
    """Carve missing val/test splits out of the train rows, stratified and seeded."""
    present = set(splits.tolist())
    missing = [i for i in (VAL, TEST) if i not in present]
    if not missing:
        return splits
    train = np.flatnonzero(splits == TRAIN)
    keep = [TRAIN] + missing
    sub = stratified_split(labels[train], [fractions[i] for i in keep], seed)
    out = splits.copy()
    out[train] = np.asarray(keep, dtype=np.uint8)[sub]
    return out


def subsample(labels: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of at most ``max_per_class`` rows per class."""
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > max_per_class:
            rng = np.random.default_rng([int(seed), int(label), 1])
            members = np.sort(rng.choice(members, max_per_class, replace=False))
        keep.append(members)
    return np.sort(np.concatenate(keep))
