"""What every script's command line shares: logging, error exits, the JSON last line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .errors import ToolkitError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the module docstring's examples kept as written."""


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true",
                       help="print the results as one JSON object on the last line")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def setup_logging(args) -> None:
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # TensorFlow's C++ start-up chatter drowns the messages that matter
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(main_body, prog: str) -> int:
    """Call ``main_body()``; a :class:`ToolkitError` becomes one line on stderr and exit code 2."""
    try:
        main_body()
    except ToolkitError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written under a final name", file=sys.stderr)
        return 130
    return 0


def print_json(obj) -> None:
    print(json.dumps(obj, sort_keys=True))
