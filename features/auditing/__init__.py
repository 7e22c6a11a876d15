"""The audit of a dataset's photos from its feature cache (``audit.py``): duplicates and leakage,
likely label errors (cleanlab), outliers, class balance; and the folder that shows them.

* :mod:`.duplicates`: exact copies as groups (the same file, the same pixels), near pairs by cosine,
  bounded; the test photos leaked from train or val.
* :mod:`.labels`: out-of-fold probabilities and cleanlab's likely label errors.
* :mod:`.outliers`: cleanlab's outlier score on the embeddings and Tukey's fence.
* :mod:`.run`: :func:`~.run.audit` of one cache, the findings as an :class:`~.run.Audit`.
* :mod:`.page`: :func:`~.page.write_audit`, its folder (audit.json, the sheets, README.md).
"""

from .page import write_audit
from .run import Audit, audit

__all__ = ["Audit", "audit", "write_audit"]
