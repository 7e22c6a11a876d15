"""Extraction: a frozen backbone run once over a dataset, its embeddings into the cache.

* :mod:`.run`: :func:`~.run.extract` (settings resolved once, the lock, the cache hit, the
  resume, the cache written) and :class:`~.run.ExtractSettings`.
* :mod:`.engines`: the local and the Ray engine behind one protocol, and the one
  checkpointing loop.
* :mod:`.ray_cluster`: Ray itself: joining a cluster, the actor pool, each actor.
"""

from .run import ExtractionResult, ExtractSettings, extract

__all__ = ["ExtractionResult", "ExtractSettings", "extract"]
