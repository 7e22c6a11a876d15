"""What is made of the records (:mod:`features.records`), above the heads and the training it uses.

* :mod:`.ensemble`: run folders' probabilities averaged, members chosen on validation.
* :mod:`.learning_curve`: heads fitted on K training images per class.
* :mod:`.report`: RESULTS.md and its plots, and the generated sections of BENCHMARKS.md.
"""
