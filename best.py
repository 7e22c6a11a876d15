"""The best classifier a time budget allows, in one command, chosen on validation.

The code is features/cli/best.py (`tl-best` when installed); `python best.py --help` says how.
"""

import sys

from features.cli.best import main

if __name__ == "__main__":
    sys.exit(main())
