"""What every job writes, below the heads and the training that write it.

* :mod:`.runs`: run folders (:class:`~.runs.RunFiles`, the owner of every file in one) and the
  results table every script appends to.
* :mod:`.metrics`: the one scoring function every method is scored with.
* :mod:`.scored`: :func:`~.scored.write_scored`, the one writer of what every scored run writes.
* :mod:`.markdown`: every name written into a page, escaped one way.
* :mod:`.sheets`: contact sheets of photos with their captions (top losses, the audit's findings).
* :mod:`.tables`: what the results table says (labels, the method chosen on validation, time to
  accuracy); :mod:`.plots`: every plot (a run's confusion matrix and curves, the report's figures).

The reports made from these records are :mod:`features.reports`, above everything they read.
"""
