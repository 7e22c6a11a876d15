"""Heads on cached embeddings: the registry, the search, the streamed fit, and a run of one.

* :mod:`.registry`: one :class:`HeadSpec` per head (its factory, grid, linear form), :func:`make_head`.
* :mod:`.params`: the checks of what a caller sets (fixed values, the search, epochs, calibration folds).
* :mod:`.linear`: a linear head as one map on the raw embeddings (what the export folds).
* :mod:`.files`: head files (skops, with an allow-list).
* :mod:`.search`: :func:`fit_head`, settings chosen by cross-validation on train, refit on train + val;
  :func:`fit_streamed`, the same a block of rows at a time.
* :mod:`.blocks`: a cache read a block of rows at a time (the scaler, class weights, a split's scores).
* :mod:`.lbfgs`: logistic regression by L-BFGS over those blocks, exact (``--stream``).
* :mod:`.streaming`: heads fitted a block of rows at a time by ``partial_fit`` (sgd).
* :mod:`.fitted`: :class:`FittedHead`, a fitted head and how it was chosen; its linear form (:func:`fold_head`).
* :mod:`.memory`: whether an in-memory head can hold a cache's embeddings.
* :mod:`.record`: a fitted head's scored run folder and results row.
* :mod:`.classify`: :func:`classify`, a head on caches, read the way it needs, scored once on test.

scikit-learn is imported only when a head is made.
"""

from .files import HEAD_FORMAT, TRUSTED_TYPES, load_head, save_head
from .fitted import FittedHead, fold_head
from .linear import Linear
from .params import check_epochs, check_params, check_search
from .registry import HEADS, HeadSpec, get_head_spec, make_head, register_head
from .search import fit_head

__all__ = [
    "HEAD_FORMAT", "HEADS", "TRUSTED_TYPES", "FittedHead", "HeadSpec", "Linear", "check_epochs", "check_params",
    "check_search", "fold_head", "get_head_spec", "load_head", "make_head", "register_head", "save_head", "fit_head",
]
