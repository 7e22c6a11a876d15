"""The benchmarks' own sections of BENCHMARKS.md: each benchmark replaces its section, between markers,
and leaves the others as they are (``benchmarks/performance.py`` writes the rest of the file)."""

from __future__ import annotations

import re
from pathlib import Path

from features.io import write_text


def write_printed_section(path, name: str, heading: str, intro: str, lines: list[str]) -> None:
    """A benchmark's own section of BENCHMARKS.md: a heading, a sentence, then its lines as printed."""
    replace_section(path, name, f"## {heading}\n\n{intro}:\n\n```\n" + "\n".join(lines) + "\n```")


def replace_section(path, name: str, text: str) -> None:
    """Put ``text`` between the markers of section ``name`` in the Markdown file ``path``.

    The markers are ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->``; a section
    not yet there is appended. Written to a temporary name and renamed. Benchmarks that
    own a section of BENCHMARKS.md write it this way, and leave the others as they are.
    """
    path = Path(path)
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    write_text(path, new)

