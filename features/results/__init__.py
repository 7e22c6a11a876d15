"""What runs leave behind, and what is made of it.

* :mod:`.runs`: run folders (:class:`~.runs.RunFiles`, the owner of every file in one) and the
  results table every script appends to.
* :mod:`.metrics`: the one scoring function every method is scored with.
* :mod:`.ensemble`: run folders' probabilities averaged, members chosen on validation.
* :mod:`.learning_curve`: heads fitted on K training images per class.
* :mod:`.tables`: what the results table says (labels, the method chosen on validation, time to
  accuracy); :mod:`.plots`: every plot; :mod:`.report`: RESULTS.md.

Import the modules themselves: the records (runs, metrics) sit below the heads and the
training that write them, the reports above everything they read.
"""
