"""Classify photos with a run folder of classify.py (a head and its backbone) or finetune.py.

The code is features/cli/predict.py (`tl-predict` when installed); `python predict.py --help` says how.
"""

import sys

from features.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
