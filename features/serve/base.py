"""What every predictor is: class names and probabilities for image paths, the unreadable ones said.

A run folder of a head or of a fine-tune, an ensemble of run folders and an exported model
all answer :meth:`Predictor.predict` the same way, so ``predict.py`` treats them alike.
"""

from __future__ import annotations

import numpy as np

from ..data import SkippedImage, why_skipped


class Predictor:
    """Maps image paths to class probabilities.

    Subclasses set ``class_names`` and implement :meth:`probabilities`; :meth:`predict` adds
    the reason each path that could not be read was skipped.
    """

    class_names: list[str]

    def probabilities(self, paths: list[str], batch_size: int, tta: str) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``paths`` of the images that decoded, their class probabilities)."""
        raise NotImplementedError

    def predict(self, paths: list[str], batch_size: int = 32, tta: str = "none"):
        """Probabilities for every decodable path, and why each other one is left out.

        Returns:
            (rows, probabilities, failed): positions in ``paths``, (len(rows), classes)
            probabilities, and a :class:`~features.data.SkippedImage` of each path left out (its position
            in ``paths``, the path, why).
        """
        rows, proba = self.probabilities(paths, batch_size, tta)
        failed = sorted(set(range(len(paths))) - set(rows.tolist()))
        return rows, proba, [SkippedImage(i, str(paths[i]), why_skipped(paths, i)) for i in failed]
