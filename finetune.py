"""Fine-tune a pretrained backbone end to end, or train the same network from scratch.

The code is features/cli/finetune.py (`tl-finetune` when installed); `python finetune.py --help` says how.
"""

import sys

from features.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
