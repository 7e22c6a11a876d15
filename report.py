"""Turn the results table into RESULTS.md and its plots.

The code is features/cli/report.py (`tl-report` when installed); `python report.py --help` says how.
"""

import sys

from features.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
