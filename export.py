"""Export a run folder's model to where models run: SavedModel, TFLite (quantized) or ONNX.

The code is features/cli/export.py (`tl-export` when installed); `python export.py --help` says how.
"""

import sys

from features.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
