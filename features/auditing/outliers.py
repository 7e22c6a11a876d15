"""Outliers: photos far from every other photo in the embedding space (not a flower among flowers).

The score is cleanlab's out-of-distribution score for features: the mean cosine distance of a
photo to its :data:`K` nearest other photos, scaled by that distance's median over the photos and
mapped to (0, 1] by ``exp(-d)`` (``cleanlab.outlier.OutOfDistribution``); the audit reports
``1 - `` it, so higher is more outlying. A photo is flagged when its mean distance lies past
Tukey's fence, Q3 + 1.5 IQR of the photos' mean distances: a rule on the cache's own spread, not a
fixed number of photos. Measured (benchmarks/audit_planted.py): 10 cats and dogs put among the 3,120
shared flowers, 9 are past the fence, which flags 58 photos in all; past the far fence (3 IQR) none is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K = 10
FENCE = 1.5  # interquartile ranges past the third quartile (Tukey's fence)


@dataclass(frozen=True)
class Outlier:
    row: int
    score: float  # 1 - cleanlab's out-of-distribution score: near 1 far from every photo


def outlier_scores(embeddings: np.ndarray, k: int = K) -> np.ndarray:
    """Each row's score (higher: farther from its nearest photos), in [0, 1)."""
    from cleanlab.outlier import OutOfDistribution

    k = min(k, len(embeddings) - 1)
    scores = OutOfDistribution(params={"k": k}).fit_score(features=np.asarray(embeddings, np.float32), verbose=False)
    return 1.0 - np.asarray(scores, np.float64)


def find_outliers(scores: np.ndarray, fence: float = FENCE) -> list[Outlier]:
    """The rows past the fence, most outlying first.

    The fence is on ``-log(1 - score)`` (the scaled mean distance, which the score maps monotonically).
    """
    distance = -np.log(np.clip(1.0 - scores, 1e-300, None))
    q1, q3 = np.percentile(distance, [25, 75])
    rows = np.nonzero(distance > q3 + fence * (q3 - q1))[0]
    return [Outlier(int(r), float(scores[r])) for r in rows[np.argsort(-scores[rows], kind="stable")]]
