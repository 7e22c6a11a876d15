"""Datasets, split by job: what images there are, how they split, how they decode, how they batch.

* :mod:`.listing`: image folders and TFDS sets listed as a :class:`DataSource`.
* :mod:`.photo_ids`: an id read back from a cache or run file checked and joined to its folder.
* :mod:`.splits`: split names and codes, the default fractions, the seeded stratified split.
* :mod:`.decoding`: file headers and pixels, the same in every process (:func:`decode_paths`
  is what a worker calls on a batch of paths); why a file is skipped, by kind.
* :mod:`.pipelines`: every tf.data batch pipeline (extraction, training, scoring, prediction).
* :mod:`.corrections`: what a person decided about the photos (keep, relabel, remove), read and applied.

The names below are the package's public API; import them from ``features.data``.
"""

from .decoding import (
                       RESIZE_METHOD,
                       SKIP_KINDS,
                       Headers,
                       Skip,
                       SkippedImage,
                       decode_image,
                       decode_paths,
                       read_headers,
                       why_undecodable,
)
from .listing import (
                       DEFAULT_MAX_PIXELS,
                       IMAGE_EXTENSIONS,
                       TFDS_DATASETS,
                       DataSource,
                       check_source,
                       images_under,
                       load_folder,
                       load_source,
                       load_tfds,
)
from .photo_ids import first_bad_id, id_problem, photo_path
from .pipelines import (
                       activation_batches,
                       decoded_images,
                       fixed_threads,
                       headers_for,
                       image_batches,
                       indexed_batches,
                       labelled_batches,
                       why_skipped,
)
from .splits import (
                       DEFAULT_SPLIT,
                       DEFAULT_SPLIT_TEXT,
                       SPLITS,
                       TEST,
                       TRAIN,
                       VAL,
                       parse_split,
                       split_code,
                       stratified_split,
)

__all__ = [
    "RESIZE_METHOD", "SKIP_KINDS", "Headers", "Skip", "SkippedImage", "decode_image", "decode_paths", "read_headers",
    "why_undecodable", "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "TFDS_DATASETS", "DataSource", "check_source",
    "images_under", "load_folder", "load_source", "load_tfds", "activation_batches", "decoded_images", "fixed_threads",
    "headers_for", "image_batches", "indexed_batches", "labelled_batches", "why_skipped", "DEFAULT_SPLIT",
    "DEFAULT_SPLIT_TEXT", "first_bad_id", "id_problem", "photo_path",
    "SPLITS", "TEST", "TRAIN", "VAL", "parse_split", "split_code", "stratified_split",
]
