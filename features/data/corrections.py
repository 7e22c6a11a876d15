"""Corrections: what a person decided about the photos (keep, relabel, remove), and every script honouring it.

The corrections file is JSON lines, one decision a line, appended as each is made (the web app's Review view
writes it; anyone may write it by hand)::

    {"id": "tulips/12.jpg", "sha256": "9f2c...", "decision": "relabel", "label": "roses", "at": "2026-12-07T22:15:04Z"}
    {"id": "daisy/77.jpg", "sha256": "01ab...", "decision": "remove", "at": "2026-12-07T22:15:09Z"}
    {"id": "roses/5.jpg", "sha256": "c3d4...", "decision": "keep", "at": "2026-12-07T22:15:12Z"}

``id`` is the photo as the cache names it (its path relative to the data folder), ``sha256`` the SHA-256 of its
bytes when the decision was made, ``decision`` one of :data:`DECISIONS`, ``label`` the new class (a relabel
only), ``at`` when (UTC). The last decision about a photo wins, so a file two writers append to loses nothing and
needs no rewriting; each line is appended whole under a lock (:func:`append_decision`).

Applied (:func:`apply_corrections`): a removed photo leaves every split, a relabelled photo carries its new class,
every other photo keeps its split, so test figures before and after compare. A photo whose bytes changed since the
decision, or that is gone, is left out of the correction with one warning each. A file that is damaged or crafted
(not JSON lines of this shape, a class the data does not have, an id outside the data folder, more than
:data:`MAX_BYTES`, not a regular file) is refused in one line naming it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import validate
from ..errors import UsageError
from ..io import NotRegularFile, TooLarge, file_lock, file_sha256, read_regular, write_all
from .photo_ids import id_problem, photo_path

log = logging.getLogger(__name__)

DECISIONS = ("keep", "relabel", "remove")
MAX_BYTES = 64 << 20  # about 300,000 decisions; a corrections file past it was not written by a person
MAX_LINE = 8192  # one decision: an id, a hash, a class name and a time
PHOTO_LIMIT = 1 << 30  # the photos hashed: as the listing's own guard
REMOVED = 255  # a removed row's split code where rows stay in place (a streamed cache, a data source): no split


@dataclass(frozen=True, kw_only=True)
class Decision:
    """One decision about one photo (see the module docstring)."""

    id: str
    sha256: str
    decision: str
    label: str | None = None
    at: str = ""

    def line(self) -> str:
        """The decision as one line of the corrections file."""
        record = {"id": self.id, "sha256": self.sha256, "decision": self.decision}
        if self.decision == "relabel":
            record["label"] = self.label
        record["at"] = self.at
        return json.dumps(record, ensure_ascii=False) + "\n"


@dataclass(frozen=True, kw_only=True)
class Corrections:
    """A corrections file read: the last decision about each photo, and the file's SHA-256 (what a run records)."""

    path: Path
    sha256: str
    decisions: dict = field(default_factory=dict)  # id -> Decision

    def summary(self) -> dict:
        """Decisions by kind: {"keep": n, "relabel": n, "remove": n}."""
        counts = dict.fromkeys(DECISIONS, 0)
        for d in self.decisions.values():
            counts[d.decision] += 1
        return counts


@dataclass(frozen=True, kw_only=True)
class Applied:
    """Corrections applied to a listing's rows (a cache's, or a data source's).

    Attributes:
        labels: every row's label after the corrections (relabelled rows carry their new class).
        keep: False for the rows removed.
        touched: {"removed", "relabelled", "kept", "left_out"}: how many photos each kind touched (``kept``: decided
            keep; ``left_out``: a decision not applied because its photo changed or is gone).
        record: what a run folder records of them: the file, its SHA-256 and ``touched``.
    """

    labels: np.ndarray
    keep: np.ndarray
    touched: dict
    record: dict

    def splits(self, splits) -> np.ndarray:
        """``splits`` with each removed row's code :data:`REMOVED` (rows that stay in place: no split selects it)."""
        return np.where(self.keep, splits, REMOVED).astype(np.uint8)

    def with_uncorrected(self, *, accuracy: float | None, n_test: int) -> "Applied":
        """These corrections with the run's test accuracy on the uncorrected test split (every test photo, with
        the label it had), for the record."""
        import dataclasses

        return dataclasses.replace(self, record={**self.record, "uncorrected_test_accuracy": accuracy,
                                                 "uncorrected_n_test": int(n_test)})


def _refuse(path, why: str):
    raise UsageError(f"{{corrections}} {path}: {why}")


def read_corrections(path) -> Corrections:
    """The corrections file at ``path``, checked line by line (no photo is read here).

    Raises:
        UsageError: not a path, not a regular file, larger than :data:`MAX_BYTES`, not UTF-8, or a line that is not
            a decision (naming the line).
    """
    path = validate.path(path, "corrections", "a corrections file")
    try:
        data = read_regular(path, MAX_BYTES)
    except FileNotFoundError:
        _refuse(path, "no such file; the app's Review view writes it, or give the path of one")
    except NotRegularFile as exc:
        _refuse(path, f"{exc}; give a corrections file")
    except TooLarge:
        _refuse(path, f"larger than {MAX_BYTES >> 20} MiB: not a corrections file a person wrote")
    except OSError as exc:
        _refuse(path, f"cannot be read ({exc.strerror or exc})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _refuse(path, "not UTF-8 text: not a corrections file")
    decisions = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        decision = _decision(line)
        if isinstance(decision, str):
            _refuse(path, f"line {number} {decision}; each line is one decision (see docs/app.md)")
        decisions[decision.id] = decision  # the last decision about a photo wins
    return Corrections(path=path, sha256=hashlib.sha256(data).hexdigest(), decisions=decisions)


def _decision(line: str):
    """A :class:`Decision` from one line, or why it is not one."""
    if len(line) > MAX_LINE:
        return f"is {len(line)} characters long"
    try:
        record = json.loads(line)
    except ValueError:
        return "is not JSON"
    if not isinstance(record, dict):
        return "is not a JSON object"
    unknown = sorted(set(record) - {"id", "sha256", "decision", "label", "at"})
    if unknown:
        return f"holds {', '.join(map(repr, unknown))}, not a field of a decision"
    photo, digest, kind = record.get("id"), record.get("sha256"), record.get("decision")
    problem = id_problem(photo)
    if problem:
        return f"names a photo that {problem}" if isinstance(photo, str) else "has no photo id"
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        return "has no SHA-256 of the photo's bytes (64 hex digits)"
    if kind not in DECISIONS:
        return f"decides {str(kind)[:40]!r}: give one of {', '.join(DECISIONS)}"
    label = record.get("label")
    if kind == "relabel" and not (isinstance(label, str) and label):
        return "relabels without a new class (label)"
    if kind != "relabel" and label is not None:
        return f"gives a label to a {kind}"
    at = record.get("at", "")
    if not isinstance(at, str) or len(at) > 40:
        return "has a time that is not an ISO time"
    return Decision(id=photo, sha256=digest, decision=kind, label=label, at=at)


def photo_sha256(root, photo_id) -> str:
    """The SHA-256 of the photo ``photo_id`` under ``root`` (checked to stay inside it)."""
    return file_sha256(photo_path(root, photo_id), PHOTO_LIMIT)


def decide(root, photo_id, decision: str, *, label: str | None = None) -> Decision:
    """A decision about a photo now, with the SHA-256 of its bytes as they are.

    Raises:
        UsageError: an unknown decision, a relabel without a class, an id outside the folder, or a photo that
            cannot be read.
    """
    if decision not in DECISIONS:
        raise UsageError(f"{{decision}} {decision}: give one of {', '.join(DECISIONS)}")
    if (decision == "relabel") != bool(label):
        raise UsageError("{label}: a relabel needs the new class, and only a relabel takes one")
    try:
        digest = photo_sha256(root, photo_id)
    except OSError as exc:
        raise UsageError(f"{photo_id}: cannot be read under {root} ({exc.strerror or exc})") from None
    at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Decision(id=photo_id, sha256=digest, decision=decision, label=label, at=at)


def append_decision(path, decision: Decision) -> None:
    """Append one decision to the corrections file at ``path`` (made when missing), whole, under a lock beside it:
    two writers (two browser tabs, two app processes) lose none."""
    path = Path(path)
    if path.exists() and not path.is_file():
        _refuse(path, "not a regular file; give a corrections file")
    data = decision.line().encode("utf-8")
    with file_lock(path.with_name(f".{path.name}.lock")):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def apply_corrections(corrections: Corrections, *, ids, labels, class_names, photo_root) -> Applied:
    """``corrections`` applied to the rows ``ids`` (and their ``labels``) of a listing of the folder ``photo_root``.

    Raises:
        UsageError: a relabel to a class the data does not have, or a listing with no photo folder (TFDS).
    """
    if photo_root is None:
        _refuse(corrections.path, "corrections apply to photos in a folder (the decisions name files and their "
                                  "bytes); this data is a TFDS set: export it to a folder and extract that")
    classes = {name: k for k, name in enumerate(class_names)}
    unknown = sorted({d.label for d in corrections.decisions.values() if d.decision == "relabel"} - set(classes))
    if unknown:
        _refuse(corrections.path, f"relabels to {', '.join(map(repr, unknown[:5]))}, not a class of this data "
                                  f"({', '.join(class_names)})")
    labels, keep = np.array(labels, dtype=np.int64), np.ones(len(labels), dtype=bool)
    touched = {"removed": 0, "relabelled": 0, "kept": 0, "left_out": 0}
    row_of = {str(photo_id): row for row, photo_id in enumerate(ids)}
    for photo_id, decision in corrections.decisions.items():
        row = row_of.get(photo_id)
        if row is None:
            continue  # a photo of another listing (another max-per-class sample, another folder's file)
        try:
            changed = photo_sha256(photo_root, photo_id) != decision.sha256
            why = "its bytes changed since the decision"
        except OSError as exc:
            changed, why = True, f"it cannot be read ({exc.strerror or exc})"
        if changed:
            log.warning("%s: left out of the corrections: %s (decided %s %s)", photo_id, why, decision.decision,
                        decision.at)
            touched["left_out"] += 1
        elif decision.decision == "remove":
            keep[row] = False
            touched["removed"] += 1
        elif decision.decision == "relabel" and labels[row] != classes[decision.label]:
            labels[row] = classes[decision.label]
            touched["relabelled"] += 1
        else:  # kept, or relabelled as the class it has
            touched["kept"] += 1
    record = {"file": str(Path(corrections.path).resolve()), "sha256": corrections.sha256, **touched}
    return Applied(labels=labels, keep=keep, touched=touched, record=record)
