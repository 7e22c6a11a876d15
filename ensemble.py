"""Score an ensemble of run folders: their probabilities averaged, on the same test images.

The code is features/cli/ensemble.py (`tl-ensemble` when installed); `python ensemble.py --help` says how.
"""

import sys

from features.cli.ensemble import main

if __name__ == "__main__":
    sys.exit(main())
