"""The checks of what a caller sets for a head: fixed values (C, gamma, k, alpha), the search, the
epochs of a head that streams, and the calibration folds the training rows allow."""

from __future__ import annotations

import numpy as np

from .. import validate
from ..errors import UsageError
from .registry import HEADS, HeadSpec, get_head_spec


def check_params(fixed: dict | None) -> dict:
    """Check values the caller fixed (``C``, ``gamma``, ``k``); return those given, cleaned.

    Raises:
        UsageError: a value no head can take (NaN, infinite, zero or negative).
    """
    out = {}
    for key, value in (fixed or {}).items():
        if value is None:
            continue
        if key == "gamma" and value in ("scale", "auto"):
            out[key] = value
        elif key == "alpha":  # SGD's steps overflow far from its grid (1e300 ended in scikit-learn's traceback)
            out[key] = validate.positive(value, key)
            if not 1e-12 <= out[key] <= 1e3:
                raise UsageError(f"{{alpha}} {value}: give a number from 1e-12 to 1000")
        elif key == "k":
            out[key] = validate.whole(value, "k", low=1, what=" of neighbours")
        else:
            number = value
            if isinstance(value, str):  # a number typed on a command line (--gamma takes words too)
                try:
                    number = float(value)
                except ValueError:
                    pass
            out[key] = validate.positive(number, key, also=", 'scale' or 'auto'" if key == "gamma" else "")
    return out


def check_search(cv: int = 5, n_jobs: int | None = None, seed: int = 0) -> None:
    """Check the search's settings: folds, parallel jobs and seed.

    Raises:
        UsageError: fewer than two folds, zero jobs, or a seed out of range.
    """
    validate.seed(seed)
    validate.whole(cv, "cv", low=2, what=" of folds")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0):
        raise UsageError(f"{{n_jobs}} {n_jobs}: give a number of parallel jobs, or -1 for every core")


def check_epochs(epochs: int | None, spec: HeadSpec | None = None) -> None:
    """Check a number of passes given for a head that streams.

    Raises:
        UsageError: not a whole number from 1 to 1000, or given for a head that has no epochs.
    """
    if epochs is None:
        return
    if spec is not None and not spec.always_streams:
        raise UsageError(f"{{epochs}} {epochs}: head {spec.name} fits in one call and has no epochs; "
                         f"{{epochs}} is for {', '.join(n for n, s in HEADS.items() if s.always_streams)}")
    validate.whole(epochs, "epochs", low=1, high=1000, what=" of passes")


def calibration_folds(name: str, labels) -> int | None:
    """The calibration folds a head can use on rows with these labels (None: it calibrates nothing).

    Raises:
        UsageError: a class has a single row: cross-validation cannot calibrate on it.
    """
    spec = get_head_spec(name)
    if not spec.calibration_folds:
        return None
    counts = np.bincount(np.asarray(labels))
    fewest = int(counts[counts > 0].min())
    if fewest < 2:
        others = ", ".join(n for n, s in HEADS.items() if not s.calibration_folds and not s.always_streams)
        raise UsageError(f"{{head}} {name}: its probabilities are calibrated by cross-validation, which needs at "
                         f"least two training images of every class, and one class has {fewest}; add photos, or "
                         f"use {others}")
    return min(spec.calibration_folds, fewest)
