"""Serving what was trained: classifying new photos, and exporting models to where they run.

* :mod:`.base`: the :class:`~.base.Predictor` every predictor is.
* :mod:`.predict`: run folders (a head on its backbone, a fine-tuned model), several averaged,
  :func:`~.predict.open_predictor` for whatever ``predict.py`` is given.
* :mod:`.export`: a run folder to one graph, written as a SavedModel, TFLite or ONNX.
* :mod:`.exported`: exported models loaded back (the export folder's format is documented there).
* :mod:`.explain`: where the network looked (CAM, Grad-CAM), ``predict.py --explain`` and the top losses
  with heatmaps.
"""
