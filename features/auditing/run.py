"""The audit of a cache's photos: duplicates and leakage, likely label errors, outliers, class balance.

Everything is computed from the cache (its embeddings, labels, splits and ids); the photos are read
only for their bytes' digests (exact copies) and the contact sheets, and may be gone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import validate
from ..cache import FeatureCache, photo_root, read_cache
from ..data.corrections import apply_corrections, read_corrections
from ..data.photo_ids import photo_path
from ..data.splits import SPLITS, TEST, TRAIN, VAL
from ..errors import CacheError, UsageError
from .duplicates import NEAR, PAIRS, Duplicates, file_digests, find_duplicates, leaked_test_rows
from .labels import FOLDS, REVIEW, LabelIssue, check_rows, find_issues, out_of_fold_probabilities
from .outliers import FENCE, K, Outlier, find_outliers, outlier_scores


@dataclass(kw_only=True)
class Audit:
    cache: FeatureCache
    photos: list  # each row's photo path, None where the source is not a folder
    threshold: float
    duplicates: Duplicates
    leaked: np.ndarray  # test rows with a copy in train or val
    accuracy: dict  # the default head's test accuracy with and without the leaked photos
    label_issues: list[LabelIssue]  # flagged by cleanlab
    label_ranking: list[LabelIssue]  # the REVIEW rows of lowest label quality, flagged or not
    outliers: list[Outlier]
    balance: dict  # split -> class -> photos
    missing: int  # photos not at hand (gone, or the source is not a folder)
    settings: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    corrections: dict | None = None  # the corrections applied first (their record), or None

    def name(self, row: int) -> str:
        return str(self.cache.ids[row])

    def label(self, code: int) -> str:
        return self.cache.class_names[code]

    def split(self, row: int) -> str:
        return SPLITS[int(self.cache.splits[row])]

    def _issue(self, i: LabelIssue) -> dict:
        return {"id": self.name(i.row), "given": self.label(i.given), "suggested": self.label(i.suggested),
                "score": round(i.score, 6), "split": self.split(i.row)}

    def _duplicates(self) -> dict:
        d = self.duplicates
        return {"groups": [{"kind": g.kind, "photos": len(g.rows), "ids": [self.name(r) for r in g.rows],
                            "splits": [self.split(r) for r in g.rows]} for g in d.groups],
                "near": [{"a": self.name(p.a), "b": self.name(p.b), "similarity": round(p.similarity, 6),
                          "splits": [self.split(p.a), self.split(p.b)]} for p in d.near],
                "near_pairs": d.near_total}

    def summary(self) -> dict:
        """The audit as JSON: ids as the cache stores them, classes by name."""
        return {
            "cache": str(self.cache.path), "dataset": self.cache.attrs.get("dataset"),
            "backbone": self.cache.attrs.get("backbone"), "photos": len(self.cache.ids),
            "photos_not_at_hand": self.missing, "near_threshold": self.threshold,
            "balance": self.balance,
            "duplicates": self._duplicates(),
            "leakage": {"test_photos": int((self.cache.splits == TEST).sum()), "leaked": len(self.leaked),
                        "leaked_ids": [self.name(r) for r in self.leaked], **self.accuracy},
            "label_issues": [self._issue(i) for i in self.label_issues],
            "lowest_label_quality": [self._issue(i) for i in self.label_ranking],
            "outliers": [{"id": self.name(o.row), "score": round(o.score, 6), "label": self.label(
                self.cache.labels[o.row]), "split": self.split(o.row)} for o in self.outliers],
            "settings": self.settings, "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            **({"corrections": self.corrections} if self.corrections is not None else {}),
        }


def photo_paths(cache: FeatureCache, data_dir=None) -> list:
    """Each row's photo: ``data_dir`` (or the folder the cache was made from) joined with its id."""
    data_dir = photo_root(cache.attrs) if data_dir is None else data_dir
    if data_dir is None:  # a TFDS set: no photo files
        return [None] * len(cache.ids)
    return [photo_path(data_dir, str(i)) for i in cache.ids]


def _balance(cache: FeatureCache) -> dict:
    return {name: {c: int(((cache.splits == code) & (cache.labels == k)).sum()) for k, c in
                   enumerate(cache.class_names)} for code, name in enumerate(SPLITS)}


def _accuracy(cache: FeatureCache, leaked: np.ndarray, seed: int, n_jobs: int | None) -> tuple[dict, float]:
    """The default head (logreg, C searched as classify.py does, refitted on train + val) on the test split,
    with and without the leaked photos; and its C."""
    from ..heads.search import fit_head

    train, val, test = (cache.splits == code for code in (TRAIN, VAL, TEST))
    if not train.any() or not test.any():
        raise UsageError(f"{{features}} {cache.path}: the cache has no {'training' if not train.any() else 'test'} "
                         "photos; an audit scores the default head on the test split")
    fitted = fit_head("logreg", cache.embeddings[train], cache.labels[train], cache.embeddings[val],
                      y_val=cache.labels[val], n_jobs=n_jobs, seed=seed)
    rows = np.nonzero(test)[0]
    correct = fitted.pipeline.predict(cache.embeddings[rows]) == cache.labels[rows]
    clean = ~np.isin(rows, leaked)
    accuracy = {"test_accuracy": float(correct.mean()), "test_accuracy_without_leaked": (
        float(correct[clean].mean()) if clean.any() else None), "head": "logreg", "C": fitted.params.get("C")}
    return accuracy, float(fitted.params.get("C", 0.01))


def audit(features, *, near: float = NEAR, data_dir=None, folds: int = FOLDS, seed: int = 0,
          n_jobs: int | None = None, corrections=None) -> Audit:
    """Audit the photos of one cache (a path or a read :class:`FeatureCache`).

    Args:
        near: the cosine similarity of the embeddings from which two photos are near copies, in (0, 1].
        data_dir: where the photos are now, if not where the cache was made from (the sheets and the
            file digests read them; the analysis does not need them).
        corrections: the path of a corrections file (:mod:`features.data.corrections`): the photos audited are
            the corrected ones (the removed left out, the relabelled with their new class).

    Raises:
        UsageError: ``near`` outside (0, 1], one class, a class with fewer photos than folds, no
            training or test photos.
        CacheError: the cache fails its checks.
    """
    near = validate.similarity(near, "near")
    folds = validate.whole(folds, "folds", low=2, what=" of folds")
    seed = validate.seed(seed)
    n_jobs = validate.optional_jobs(n_jobs)
    data_dir = validate.optional_path(data_dir, "data_dir", "the folder of the photos")
    if corrections is not None:
        corrections = read_corrections(corrections)
    cache = features if isinstance(features, FeatureCache) else read_cache(
        validate.path(features, "features", "a feature cache"))
    applied = None
    if corrections is not None:
        applied = apply_corrections(corrections, ids=cache.ids, labels=cache.labels, class_names=cache.class_names,
                                    photo_root=data_dir or photo_root(cache.attrs))
        cache = cache.corrected(applied)
    if len(cache.ids) < 2:
        raise CacheError(f"{{features}} {cache.path}: holds {len(cache.ids)} photo; nothing to compare")
    present = np.unique(cache.labels)
    check_rows(cache.labels, len(cache.class_names), folds)
    seconds = {}
    start = time.perf_counter()
    photos = photo_paths(cache, data_dir)
    digests = file_digests(photos)
    missing = sum(d is None for d in digests)
    duplicates = find_duplicates(cache.embeddings, near, digests if missing < len(digests) else None,
                                 splits=cache.splits)
    leaked = leaked_test_rows(cache.embeddings, cache.splits, threshold=near, groups=duplicates.groups)
    seconds["duplicates"] = time.perf_counter() - start

    start = time.perf_counter()
    accuracy, C = _accuracy(cache, leaked, seed, n_jobs)
    seconds["head"] = time.perf_counter() - start

    start = time.perf_counter()
    codes = np.searchsorted(present, cache.labels)  # classes with no photo left out of the probabilities
    probabilities = out_of_fold_probabilities(cache.embeddings, codes, C=C, folds=folds, seed=seed, n_jobs=n_jobs)
    flagged, ranked = find_issues(codes, probabilities)
    issues, ranking = ([LabelIssue(row=i.row, given=int(present[i.given]), suggested=int(present[i.suggested]),
                                   score=i.score) for i in found]
                       for found in (flagged, ranked[:REVIEW]))
    seconds["label_issues"] = time.perf_counter() - start

    start = time.perf_counter()
    outliers = find_outliers(outlier_scores(cache.embeddings))
    seconds["outliers"] = time.perf_counter() - start
    settings = {"near_threshold": near, "near_pairs_kept": PAIRS, "folds": folds, "seed": seed, "head": "logreg",
                "C": C, "outlier_neighbours": min(K, len(cache.ids) - 1), "outlier_fence_iqr": FENCE}
    return Audit(cache=cache, photos=photos, threshold=near, duplicates=duplicates, leaked=leaked, accuracy=accuracy,
                 label_issues=issues, label_ranking=ranking, outliers=outliers, balance=_balance(cache),
                 missing=missing, settings=settings, seconds=seconds,
                 corrections=applied.record if applied is not None else None)
