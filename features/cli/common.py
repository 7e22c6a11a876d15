"""What every script's command line shares: logging, error exits, the JSON last line.

The library names its parameters in errors (``image_size``); here they become the
script's flags (``--image-size``), see :func:`flag_renderer`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import DiskFullError, ToolkitError, disk_full_path, is_disk_full


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, said once and right, and the module docstring's examples kept as written.

    A switch (``--force``, ``--no-augment``) has no default to print, and neither has an
    option whose default is None: its help says in words what happens without it.
    """

    def _get_help_string(self, action):
        if (action.default is None or isinstance(action.default, bool) or action.nargs == 0
                or "default" in (action.help or "")):
            return action.help
        return super()._get_help_string(action)


def program(script: str) -> str:
    """The name the user ran: ``tl-extract`` for an entry point, else the script's (``extract.py``)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("tl-") else script


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """The dataset flags. Scripts given the same values list the same images and split."""
    from ..data import DEFAULT_MAX_PIXELS, DEFAULT_SPLIT_TEXT, TFDS_DATASETS

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="tf_flowers", choices=sorted(TFDS_DATASETS),
                      help="TFDS dataset, downloaded on first use (ignored with --data-dir)")
    data.add_argument("--data-dir", metavar="DIR",
                      help="image folder: one sub-folder per class, or train/ val/ test/ each holding them")
    data.add_argument("--tfds-dir", metavar="DIR",
                      help="TFDS data folder (default: TFDS's own, ~/tensorflow_datasets)")
    data.add_argument("--split", default=DEFAULT_SPLIT_TEXT,
                      help="train,val,test fractions of the stratified split made where the source has none")
    data.add_argument("--seed", type=int, default=0, help="seed of the split (and of --max-per-class)")
    data.add_argument("--max-per-class", type=int, metavar="K",
                      help="use a seeded sample of at most K images per class (quick runs)")
    data.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                      help="skip files whose header says more pixels than N, before decoding them "
                           "(decompression bombs); 0 for no limit")


def load_data(args):
    """Check the data flags, then list the dataset. Returns (source, split fractions)."""
    from .. import validate
    from ..data import load_source, parse_split
    from ..errors import UsageError

    split = parse_split(args.split)
    validate.optional_whole(args.max_per_class, "max_per_class", low=1)
    if args.max_pixels < 0:
        raise UsageError(f"{{max_pixels}} {args.max_pixels}: give a number of pixels, or 0 for no limit")
    source = load_source(args.dataset, args.data_dir, tfds_dir=args.tfds_dir, split=split,
                         seed=args.seed, max_per_class=args.max_per_class, max_pixels=args.max_pixels or None)
    logging.getLogger(__name__).info("%s: %d images, %d classes, split %s", source.name, len(source),
                                     len(source.class_names), source.split_counts())
    return source, split


_TYPES = {"int": int, "float": float, "str": str}


def add_config_flags(parser: argparse.ArgumentParser, config_class, *, groups: dict | None = None,
                     aliases: dict | None = None) -> None:
    """One flag per field of a settings dataclass (:class:`features.train.config.TrainConfig`).

    Each field's metadata holds its help (``{param}`` placeholders rendered as this
    script's flags), its group, and argparse extras (``choices``, ``metavar``); the default
    and the type come from the field. A bool field is a switch; ``flag=False`` leaves the
    field to another flag (``--seed`` of the data flags); ``name`` is the flag's name where
    it is not the field's own (``out`` for ``out_dir``: ``--out``).

    Args:
        groups: group name -> the parser's argument group (made here when missing).
        aliases: flag -> (field, value, help): a switch that sets a field to one value
            (``--no-augment`` for ``--augment none``).
    """
    import dataclasses

    groups = {} if groups is None else groups
    for f in dataclasses.fields(config_class):
        meta = dict(f.metadata)
        if not meta or not meta.pop("flag", True):
            continue
        help_text, group = meta.pop("help"), meta.pop("group", "options")
        target = groups.setdefault(group, parser.add_argument_group(group))
        flag = "--" + meta.pop("name", f.name).replace("_", "-")
        type_name = str(f.type).replace(" | None", "")
        mine = {alias: spec for alias, spec in (aliases or {}).items() if spec[0] == f.name}
        if mine:  # a flag and its aliases: one of them at a time (--augment strong --no-augment is refused)
            target = target.add_mutually_exclusive_group()
        if type_name == "bool":
            target.add_argument(flag, dest=f.name, action="store_true", default=f.default, help=help_text)
        else:
            target.add_argument(flag, dest=f.name, type=_TYPES[type_name], default=f.default, help=help_text, **meta)
        for alias, (name, value, alias_help) in mine.items():
            target.add_argument(alias, dest=name, action="store_const", const=value, help=alias_help)
    flag = flag_renderer(parser)
    for action in parser._actions:  # help text speaks in this script's flags
        if action.help and "{" in action.help:
            from ..errors import ToolkitError

            action.help = ToolkitError(action.help).render(flag)


def config_from_flags(args, config_class, **values):
    """The dataclass from the parsed flags (``values`` for fields another flag sets)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{**{k: v for k, v in vars(args).items() if k in names}, **values})


def add_corrections_flag(group) -> None:
    """``--corrections FILE``: the one declaration of the flag every script that reads photos' labels takes."""
    group.add_argument("--corrections", metavar="FILE",
                       help="a corrections file (the app's Review view writes it; docs/app.md): removed photos "
                            "leave every split, relabelled photos carry their new class, every other photo keeps "
                            "its split; a photo whose bytes changed since the decision is left out of it")


def corrections_line(record: dict) -> str:
    """What a run's corrections touched, and its test accuracy before them, in one line."""
    before = record.get("uncorrected_test_accuracy")
    versus = f"; test accuracy on the uncorrected test split {before:.4f}" if before is not None else ""
    return (f"  corrections {record['file']}: {record['removed']} removed, {record['relabelled']} relabelled, "
            f"{record['kept']} kept, {record['left_out']} left out (changed or gone){versus}")


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
        from ..device import quiet_tensorflow

        quiet_tensorflow()


def flag_renderer(parser: argparse.ArgumentParser):
    """Render the library's ``{param}`` and ``{param=value}`` as this script's flags.

    ``{image_size}`` becomes ``--image-size``, ``{weights=PATH}`` ``--weights PATH``, and a
    switch's own value its flag alone (``{force=True}``: ``--force``; ``{augment=False}``:
    ``--no-augment``). A parameter the script has no flag for keeps the toolkit's
    spelling of flags (``--name-with-dashes``); a positional argument its upper-case name.
    """
    actions: dict[str, list] = {}
    for a in parser._actions:
        actions.setdefault(a.dest, []).append(a)

    def flag(name: str, value: str | None) -> str:
        found = actions.get(name, [])
        # a switch that sets this very value (--no-augment for {augment=none}), else the main flag
        action = next((a for a in found if a.nargs == 0 and value is not None and value == str(a.const)),
                      next((a for a in found if a.nargs != 0), found[0] if found else None))
        if action is not None and not action.option_strings:
            option = name.upper()
        elif action is not None:
            option = max(action.option_strings, key=len)
        else:
            option = "--" + name.replace("_", "-")
        if value is None:
            return option
        if action is not None and action.nargs == 0:  # a switch
            return option if value == str(action.const) else f"without {option}"
        if action is None and value in ("True", "False"):  # another script's switch
            return option if value == "True" else "--no-" + option[2:]
        return f"{option} {value}"

    return flag


def one_line(text: str) -> str:
    """``text`` on one line: control characters (a newline or carriage return in a path the user
    typed, say) are shown escaped, as Python writes them in a string, and so are the surrogates
    that stand for bytes of an argument that was not valid UTF-8 (whatever the stream's errors
    handler, the line can be written)."""
    import unicodedata

    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs") else c for c in text)


INTERRUPTED = "interrupted; nothing was written under a final name"


def run(job, prog: str, flag=None, *, interrupted: str = INTERRUPTED) -> int:
    """Call ``job()``; a :class:`ToolkitError` becomes one line on stderr and exit code 2.

    Args:
        flag: renders the error's parameters (see :func:`flag_renderer`).
        interrupted: what Ctrl-C left, said after ``prog``.
    """
    try:
        job()
    except ToolkitError as exc:
        if isinstance(exc, DiskFullError):
            from ..cache.writer import close_open_files

            close_open_files()
        print(f"{prog}: error: {one_line(exc.render(flag))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as exc:  # a full disk, in whatever words and error type the writing library has
        if not is_disk_full(exc):
            raise
        from ..cache.writer import close_open_files

        close_open_files()  # a write cut short may have left one open: closing it at exit crashed
        where = disk_full_path(exc)
        print(one_line(f"{prog}: error: no space left on the device{f' while writing {where}' if where else ''}; "
                       "free some space and run the same command again. Nothing was written under a final name."),
              file=sys.stderr)
        return 2
    return 0


def print_json(obj) -> None:
    print(json.dumps(obj, sort_keys=True))


def main(build_parser, job, argv=None, *, interrupted: str = INTERRUPTED) -> int:
    """A script's ``main``: parse ``argv``, set up logging, run ``job(args)`` with :func:`run`."""
    for stream in (sys.stdout, sys.stderr):
        # A path given in bytes that are not UTF-8 is printed escaped (\udcff), as Python writes it,
        # never a UnicodeEncodeError once the work is done.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    return run(lambda: job(args), parser.prog, flag_renderer(parser), interrupted=interrupted)
