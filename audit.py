"""Audit a dataset's photos from a feature cache: duplicates and leakage, likely label errors, outliers.

The code is features/cli/audit.py (`tl-audit` when installed); `python audit.py --help` says how.
"""

import sys

from features.cli.audit import main

if __name__ == "__main__":
    sys.exit(main())
