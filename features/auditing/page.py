"""An audit's folder: audit.json, contact sheets of what it found, and README.md linking them.

The folder is built under a temporary name and renamed when whole (as a run folder is), under
``out_dir/<time>-audit-<dataset>-<backbone>``.
"""

from __future__ import annotations

from pathlib import Path

from .. import validate
from ..data.splits import TEST
from ..errors import UsageError
from ..io import write_json, write_text
from ..records.markdown import markdown_text
from ..records.runs import run_folder
from ..records.sheets import Tile, draw_sheet, grid, short_name
from .run import Audit

TOP = 24  # photos (or pairs) drawn on each sheet
MAX_TOP = 120  # 20 rows of 6 tiles, a sheet about 1,200 x 5,100 px; --top 1,400 drew one 89,287 px tall


def check_top(top) -> int:
    """The photos a sheet draws: a whole number from 1 to :data:`MAX_TOP`."""
    return validate.whole(top, "top", low=1, high=MAX_TOP, what=" of photos a sheet")


def _tile(audit: Audit, row: int, *lines: str) -> Tile:
    return Tile(audit.photos[row], "\n".join([short_name(audit.name(row)), *lines]))


def _shown_pair(audit: Audit, rows) -> tuple[int, int]:
    """Two photos of a group: a photo outside test and a test photo where the group holds both (a leak)."""
    test = [r for r in rows if audit.cache.splits[r] == TEST]
    other = [r for r in rows if audit.cache.splits[r] != TEST]
    return (other[0], test[0]) if test and other else (rows[0], rows[1])


def _sheets(audit: Audit, folder: Path, top: int) -> dict[str, str]:
    """Draw each list's sheet that has something on it; return {list: file name}."""
    drawn = {}
    found = audit.duplicates
    if found.groups or found.near:
        def where(row):
            return f"{audit.split(row)}, {audit.label(audit.cache.labels[row])}"

        pairs = []
        for g in found.groups[:max(1, top // 2)]:
            a, b = _shown_pair(audit, g.rows)
            more = f" (+{len(g.rows) - 2} more)" if len(g.rows) > 2 else ""
            pairs.append([_tile(audit, a, where(a)),
                          _tile(audit, b, where(b), f"{g.kind}, {len(g.rows)} photos{more}")])
        for p in found.near[:max(0, max(1, top // 2) - len(pairs))]:
            pairs.append([_tile(audit, p.a, where(p.a)), _tile(audit, p.b, where(p.b), f"near {p.similarity:.4f}")])
        rows = [pairs[i] + (pairs[i + 1] if i + 1 < len(pairs) else []) for i in range(0, len(pairs), 2)]
        drawn["duplicates"] = draw_sheet(rows, folder / "duplicates.png",
                                         title=f"Copies: groups of exact copies (two of each shown), then near pairs, "
                                               f"most similar first (near from cosine {audit.threshold})").name
    flagged = {i.row for i in audit.label_issues}
    shown = audit.label_issues[:top] + [i for i in audit.label_ranking if i.row not in flagged][:top - len(flagged)]
    if shown:
        tiles = [_tile(audit, i.row, f"given {audit.label(i.given)} ({audit.split(i.row)})",
                       f"suggested {audit.label(i.suggested)}, {i.score:.3f}"
                       + ("" if i.row in flagged else " (not flagged)")) for i in shown]
        drawn["label_issues"] = draw_sheet(grid(tiles), folder / "label_issues.png",
                                           title="Likely label errors (cleanlab), then the lowest label quality not "
                                           "flagged, most suspicious first").name
    if audit.outliers:
        tiles = [_tile(audit, o.row, f"{audit.label(audit.cache.labels[o.row])} ({audit.split(o.row)})",
                       f"outlier score {o.score:.3f}") for o in audit.outliers[:top]]
        drawn["outliers"] = draw_sheet(grid(tiles), folder / "outliers.png",
                                       title="Outliers, most outlying first").name
    return drawn


def _page(audit: Audit, summary: dict, sheets: dict[str, str]) -> str:
    leak, s, md = summary["leakage"], summary, markdown_text
    lines = [f"# Audit of {md(s['dataset'])} / {md(s['backbone'])}", "",
             f"Cache {md(s['cache'])}: {s['photos']} photos"
             + (f", {s['photos_not_at_hand']} not at hand (their thumbnails say so)" if s["photos_not_at_hand"] else "")
             + ". Every figure is computed from the cache's embeddings; `audit.json` holds all of it.", "",
             "## Class balance", "", "| class | " + " | ".join(map(md, s["balance"])) + " |",
             "|---|" + "---|" * len(s["balance"])]
    for name in audit.cache.class_names:
        lines.append(f"| {md(name)} | " + " | ".join(str(s["balance"][split][name]) for split in s["balance"]) + " |")
    without = leak["test_accuracy_without_leaked"]
    lines += ["", "## Duplicates and leakage", "", describe_duplicates(s["duplicates"], s["near_threshold"]) + ".",
              f"{leak['leaked']} of the {leak['test_photos']} test photos have a copy in train or val. The default "
              f"head (logreg, C {leak['C']}) scores {leak['test_accuracy']:.4f} on the test split, "
              + (f"{without:.4f} without them." if without is not None else "and no test photo is left without them."),
              ""]
    if "duplicates" in sheets:
        lines += [f"![duplicates]({sheets['duplicates']})", ""]
    lines += ["## Likely label errors", "",
              f"{len(s['label_issues'])} photos that cleanlab finds likely mislabelled, from out-of-fold "
              f"probabilities of logistic regression ({s['settings']['folds']}-fold); score 1 - the probability "
              "given to the photo's own label. The sheet fills up with the photos of lowest label quality that "
              "cleanlab did not flag (marked so): on a set the head separates almost perfectly it may flag none.", ""]
    if "label_issues" in sheets:
        lines += [f"![label issues]({sheets['label_issues']})", ""]
    lines += ["## Outliers", "",
              f"{len(s['outliers'])} photos far from every other photo (mean cosine distance to their "
              f"{s['settings']['outlier_neighbours']} nearest past Q3 + {s['settings']['outlier_fence_iqr']:g} IQR).",
              ""]
    if "outliers" in sheets:
        lines += [f"![outliers]({sheets['outliers']})", ""]
    return "\n".join(lines)


def describe_duplicates(found: dict, threshold: float) -> str:
    """The summary's duplicates in words: groups of exact copies by kind, and near pairs."""
    groups = found["groups"]
    kinds = {k: [g for g in groups if g["kind"] == k] for k in ("same file", "same pixels")}
    said = [f"{len(v)} group{'' if len(v) == 1 else 's'} of the {k} ({sum(g['photos'] for g in v)} photos)"
            for k, v in kinds.items() if v] or ["no exact copies"]
    near, listed = found["near_pairs"], len(found["near"])
    said.append(f"{near} near pair{'' if near == 1 else 's'} (embeddings' cosine similarity at least {threshold}"
                + (f"; the {listed} most similar listed" if listed < near else "") + ")")
    return ", ".join(said)


def write_audit(audit: Audit, out_dir="audits", top: int = TOP) -> tuple[Path, dict]:
    """Write the audit's folder; return (its path, the summary written to audit.json).

    Raises:
        UsageError: ``top`` is not a whole number from 1 to :data:`MAX_TOP`.
    """
    if not isinstance(audit, Audit):
        raise UsageError(f"{{audit}} {str(audit)[:80]!r}: give what audit(...) returns")
    top = check_top(top)
    summary = audit.summary()
    with run_folder(out_dir, "audit", str(summary["dataset"] or "cache"), str(summary["backbone"] or "")) as run:
        sheets = _sheets(audit, run.path, top)
        summary["sheets"] = sheets
        summary["folder"] = str(run.final)
        write_json(run.path / "audit.json", summary)
        write_text(run.path / "README.md", _page(audit, summary, sheets))
    return run.final, summary
