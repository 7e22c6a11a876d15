"""A fitted head: what the search chose and how long it took (:class:`FittedHead`), its parameters as plain
values (:func:`plain`), and its linear form on the raw embeddings where it has one (:func:`fold_head`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .linear import Linear
from .registry import HEADS, get_head_spec


@dataclass(kw_only=True)
class FittedHead:
    """A head fitted on train + val, with how it was chosen."""

    name: str
    pipeline: object
    params: dict
    cv_accuracy: float | None
    search_seconds: float
    fit_seconds: float
    val_accuracy: float | None = None  # where the settings were chosen on the validation split
    val: tuple | None = None  # (ids, labels, probabilities) of val by a copy fitted on train alone, where made
    calibration: int | None = None  # the calibration folds it was fitted with (the SVMs)
    passes: int | None = None  # passes over the cache, for a head fitted a block at a time by L-BFGS

    def predict_proba(self, X) -> np.ndarray:
        return self.pipeline.predict_proba(X)


def plain(params: dict) -> dict:
    """Parameters as plain Python values (NumPy scalars become numbers), for JSON and the record."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def fold_head(pipeline, name: str) -> Linear:
    """A fitted head pipeline as one :class:`Linear` map on the raw embeddings.

    Raises:
        UsageError: the head has no single linear form (naming the heads that do).
    """
    spec = get_head_spec(name)
    if spec.fold is None:
        foldable = ", ".join(n for n, s in HEADS.items() if s.fold is not None)
        raise UsageError(f"head {name} has no single-graph form to export; heads that export: {foldable}")
    scaler = pipeline.named_steps["scale"]
    return spec.fold(pipeline.named_steps["clf"]).fold_scaler(np.asarray(scaler.mean_, np.float64),
                                                                np.asarray(scaler.scale_, np.float64))
