"""A local web app over the runs and the audit: try a photo, see a run's mistakes, review the photos.

The code is features/cli/app.py (`tl-app` when installed); `python app.py --help` says how.
"""

import sys

from features.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
