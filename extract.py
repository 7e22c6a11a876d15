"""Embed every image of a dataset with a frozen ImageNet backbone, once, into an HDF5 cache.

The code is features/cli/extract.py (`tl-extract` when installed); `python extract.py --help` says how.
"""

import sys

from features.cli.extract import main

if __name__ == "__main__":
    sys.exit(main())
