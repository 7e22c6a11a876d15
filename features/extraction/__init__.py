"""Extraction: a frozen backbone run once over a dataset, its embeddings into the cache.

* :mod:`.settings`: :class:`~.settings.ExtractOptions`, every option declared once (default, help, choices;
  extract.py's flags are made from it) and checked in one place, giving the :class:`~.settings.ExtractSettings`
  a run is handed.
* :mod:`.run`: :func:`~.run.extract` (the lock, the cache hit, the resume, the cache written).
* :mod:`.engines`: the local and the Ray engine behind one protocol, and the one
  checkpointing loop.
* :mod:`.ray_cluster`: Ray itself: joining a cluster, the actor pool, each actor.
"""

from .run import ExtractionResult, extract
from .settings import ExtractOptions, ExtractSettings

__all__ = ["ExtractOptions", "ExtractionResult", "ExtractSettings", "extract"]
