"""The audit of a dataset's photos from its feature cache (``audit.py``): duplicates and leakage,
likely label errors (cleanlab), outliers, class balance; and the folder that shows them."""

from .page import write_audit
from .run import Audit, audit

__all__ = ["Audit", "audit", "write_audit"]
