"""Names written into a page: one escaping for every Markdown (and HTML) page the toolkit writes.

Class, dataset, backbone and file names come from the user's folders and files: a class folder named
``a | b`` shifted a table's cells, and a newline in a folder name ended the table and put headings,
links, remote images and raw HTML into the page. :func:`markdown_text` makes a name one line of
literal text wherever it lands (a table cell, a heading, a sentence, an image's caption).
"""

from __future__ import annotations

import re

# CommonMark's backslash escapes: any ASCII punctuation may be escaped; these are the ones that start or end
# something (emphasis, code, links, images, tables, headings, strikethrough, HTML, autolinks)
# (``_`` between two letters or digits cannot open or close emphasis: ``efficientnet_lite0`` stays as it is)
_SPECIAL = re.compile(r"([\\`*\[\]#!|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")  # newlines and the rest: a name is one line


def markdown_text(name) -> str:
    """``name`` as literal text in Markdown or HTML: one line, every special character escaped.

    ``<``, ``>`` and ``&`` become entities (no tag, no autolink, no entity of the name's own), the
    characters that start Markdown constructs are backslash-escaped, and control characters (newlines
    among them) become one space.
    """
    text = _CONTROL.sub(" ", str(name))
    text = _SPECIAL.sub(r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
