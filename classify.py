"""Train a scikit-learn head on cached embeddings and score it on the cache's test split.

The code is features/cli/classify.py (`tl-classify` when installed); `python classify.py --help` says how.
"""

import sys

from features.cli.classify import main

if __name__ == "__main__":
    sys.exit(main())
