"""Names from the user's folders written into the pages the toolkit makes (hostile pass five, defect 4): every
page escapes them one way, and a Markdown parser reads each name back as the literal text it was."""

import pytest
from markdown_it import MarkdownIt
from test_audit import planted

from features.auditing import audit, write_audit
from features.cli import report
from features.records import runs
from features.records.markdown import markdown_text
from helpers import write_cache

NAMES = ["a | b", "back\\slash", "tick`s`", "star*s*", "_under_", "[link](http://example.com)",
         "<img src=http://example.com/x.png>", "new\nline\n# Heading\n![i](http://example.com/i.png)", "x &amp; y"]


def _parser():
    return MarkdownIt("commonmark").enable("table")


def _inline_text(tokens) -> str:
    """What a reader sees of an inline token's children: text, code and entities as rendered."""
    return "".join(t.content if t.type in ("text", "text_special", "code_inline") else " " if t.type == "softbreak"
                   else "" for t in tokens)


def _constructs(text: str) -> set[str]:
    """The kinds of Markdown constructs in a page (raw HTML, images, links, headings, emphasis, ...)."""
    kinds = set()
    for token in _parser().parse(text):
        kinds.add(token.type)
        kinds.update(child.type for child in token.children or [])
    return kinds


@pytest.mark.parametrize("name", NAMES)
def test_an_escaped_name_reads_back_as_itself_on_one_line(name):
    tokens = _parser().parse(markdown_text(name))
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"]
    assert {c.type for c in tokens[1].children} <= {"text"}, tokens[1].children
    assert _inline_text(tokens[1].children) == name.replace("\n", " ")


def test_the_audit_page_shows_each_class_name_in_its_own_cell(tmp_path):
    X, y, splits, _ = planted()
    classes = [NAMES[0], NAMES[6], NAMES[7]]  # a pipe, raw HTML, a newline with a heading and an image
    cache = write_cache(tmp_path / "c.h5", X, y, classes, splits=splits,
                        attrs={"dataset": "set | with\n# a heading", "backbone": "toy<script>"})
    folder, _ = write_audit(audit(cache), tmp_path / "audits")
    page = (folder / "README.md").read_text()
    tokens = _parser().parse(page)
    cells, row = [], None
    for k, t in enumerate(tokens):
        if t.type == "tr_open":
            row = []
        elif t.type in ("td_open", "th_open"):
            row.append(_inline_text(tokens[k + 1].children))
        elif t.type == "tr_close":
            cells.append(row)
    assert [c[0] for c in cells] == ["class"] + [c.replace("\n", " ") for c in classes]
    assert all(len(c) == 4 for c in cells), cells  # class, train, val, test: no cell shifted
    headings = [_inline_text(tokens[i + 1].children) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings[0] == "Audit of set | with # a heading / toy<script>"
    assert headings[1:] == ["Class balance", "Duplicates and leakage", "Likely label errors", "Outliers"]
    assert not _constructs(page) & {"html_inline", "html_block", "link_open"}


def test_results_md_shows_names_as_text(tmp_path):
    out_dir = tmp_path / "runs"
    for method, head, acc in (("frozen-features", "logreg", 0.9), ("finetune", "dense128", 0.95)):
        runs.append_result(out_dir, {
            "dataset": "pets | x\n# injected <b>", "backbone": "toy\n![i](http://example.com/i.png)",
            "image_size": 32, "method": method, "head": head, "accuracy": acc, "precision_macro": acc,
            "recall_macro": acc, "f1_macro": acc, "total_seconds": 10.0, "seconds_per_epoch": None,
            "val_accuracy": acc, "n_test": 20,
            "per_class": {NAMES[0]: {"precision": 0.9}, NAMES[5]: {"precision": 1.0}, NAMES[6]: {"precision": 1.0}}})
    md = tmp_path / "R.md"
    assert report.main(["--results", str(out_dir), "--out", str(md), "--plots-dir", str(tmp_path / "p"),
                        "--map", "none", "--no-heatmaps"]) == 0
    text = md.read_text()
    tokens = _parser().parse(text)
    headings = [_inline_text(tokens[i + 1].children) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == ["Results", "pets | x # injected <b>", "Plots"]
    images = [c.attrs["src"] for t in tokens for c in t.children or [] if c.type == "image"]
    assert images and all(not src.startswith("http") for src in images)  # only the report's own plots
    assert not _constructs(text) & {"html_inline", "html_block", "link_open"}
    body = next(t for t in tokens if t.type == "inline" and _inline_text(t.children).startswith("How high"))
    for shown in ("a | b 0.9000", "[link](http://example.com) 1.0000", "<img src=http://example.com/x.png> 1.0000"):
        assert shown in _inline_text(body.children)
