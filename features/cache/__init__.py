"""The HDF5 feature cache: one owner of the format, split by job.

* :mod:`.identity`: :class:`CacheIdentity`, what a cache is of: the key a hit compares and the file name.
* :mod:`.schema`: the format's one description (its docstring),
  :func:`read_attrs` and the checks every read makes (:func:`check_schema`).
* :mod:`.writer`: the writers' lock, the checkpoints of a running extraction, :class:`CacheWriter`.
* :mod:`.reader`: :func:`read_cache`, :class:`CacheRows` (a block of rows at a time),
  :func:`concat_caches`; rows of several files are matched by id in one place, :func:`align_ids`.
* :mod:`.shards`: :func:`merge_shards`, shard files joined as virtual datasets.

Nothing outside this package opens a cache with h5py.
"""

from .identity import CacheIdentity
from .reader import CacheRows, align_ids, concat_caches, newest_cache, read_cache, read_listing, verify
from .schema import FeatureCache, attr_value, photo_root, read_attrs
from .shards import merge_shards, merged_path
from .writer import CacheWriter, Checkpoints, close_open_files, writer_lock

__all__ = [
    "CacheRows", "align_ids", "concat_caches", "newest_cache", "read_cache", "read_listing", "verify", "FeatureCache",
    "attr_value", "CacheIdentity", "photo_root", "read_attrs", "merge_shards", "merged_path", "CacheWriter",
    "Checkpoints",
    "close_open_files", "writer_lock",
]
