"""What the web app shows and does, without the page: the runs to choose from, one photo tried on a run, a run's
mistakes and confusion matrix, the audit's findings on its cache and the decisions taken on them.

Every function here takes and returns plain values (paths, lists, dicts), so the page (:mod:`.page`) only lays them
out, and the tests call them without a browser. Photos are read through the toolkit's one guarded decoder
(:func:`features.data.decode_paths` behind every predictor); nothing here moves, edits or deletes a photo: a
decision is one line appended to the corrections file (:mod:`features.data.corrections`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.corrections import DECISIONS, append_decision, decide, read_corrections
from ..data.photo_ids import photo_path
from ..errors import ToolkitError, UsageError
from ..io import read_json
from ..records.runs import RunFiles

log = logging.getLogger(__name__)

MISTAKES = 24  # the test photos shown in Mistakes, highest loss first
HEATMAPS = 8  # of them, the ones drawn with their heatmaps (each costs a pass through the network)
KINDS = ("label error", "leaked copy", "near copy", "same file", "outlier")


@dataclass(frozen=True, kw_only=True)
class RunEntry:
    """A run folder as the run picker lists it."""

    path: Path
    method: str
    backbone: str
    dataset: str
    accuracy: float | None
    features: list = field(default_factory=list)  # the caches a head was trained on
    members: list = field(default_factory=list)  # an ensemble's run folders

    @property
    def label(self) -> str:
        accuracy = f"test {self.accuracy:.4f}" if self.accuracy is not None else "not scored"
        return f"{self.path.name}: {self.method} on {self.backbone}, {accuracy}"


def list_runs(paths) -> list[RunEntry]:
    """The run folders at ``paths`` (each a run folder, or a folder of them), the newest first; a folder that is no
    run folder (or a damaged one) is left out with one warning."""
    found = []
    for path in (Path(p) for p in paths):
        folders = [path] if (path / RunFiles.METRICS).is_file() else sorted(
            (p for p in path.iterdir() if (p / RunFiles.METRICS).is_file()), reverse=True) if path.is_dir() else []
        if not folders:
            log.warning("%s: no run folder there (a run folder holds %s)", path, RunFiles.METRICS)
        for folder in folders:
            try:
                row = RunFiles(folder).read_metrics()
            except UsageError as exc:
                log.warning("%s", exc)
                continue
            found.append(RunEntry(path=folder, method=str(row.get("method") or row.get("head") or "?"),
                                  backbone=str(row.get("backbone") or "?"), dataset=str(row.get("dataset") or "?"),
                                  accuracy=row.get("accuracy"), features=list(row.get("features") or []),
                                  members=list(row.get("members") or [])))
    found.sort(key=lambda e: e.path.stat().st_mtime, reverse=True)
    return found


@dataclass(kw_only=True)
class Tried:
    """One photo tried on a run: its classes ranked, the heatmap (a PNG) or why there is none, what answered."""

    top: dict  # class -> probability, every class
    heatmap: Path | None
    why_no_heatmap: str | None
    answered: str  # the run, its backbone, runtime and precision
    seconds: float


class Workbench:
    """The app's state: the runs, each one's predictor loaded once, a folder of its own for the pictures it draws,
    the corrections file and the audits' folder."""

    def __init__(self, runs: list[RunEntry], *, corrections, audits_dir, runtime: str = "auto", flags=None):
        """``flags``: renders ``{param=value}`` as classify.py's flags (the command line's app shows the command
        that applies the corrections); None: the Python call."""
        self.runs, self.flags = {str(e.path): e for e in runs}, flags
        self.corrections, self.audits_dir, self.runtime = Path(corrections), Path(audits_dir), runtime
        self.pictures = Path(tempfile.mkdtemp(prefix="tl-app-"))
        self._predictors, self._explainers = {}, {}

    # --- Try it -------------------------------------------------------------------------------------------
    def entry(self, run) -> RunEntry:
        try:
            return self.runs[str(run)]
        except KeyError:
            raise UsageError(f"{run}: not one of the app's runs") from None

    def predictor(self, run):
        from ..serve.predict import open_predictor

        entry = self.entry(run)
        if str(entry.path) not in self._predictors:
            if entry.members:
                self._predictors[str(entry.path)] = open_predictor(entry.members[0], entry.members[1:])
            else:
                self._predictors[str(entry.path)] = open_predictor(entry.path, runtime=self.runtime)
        return self._predictors[str(entry.path)]

    def explainer(self, run):
        """The run's explainer, or the one-line reason it has none."""
        from ..serve.explain import explainer

        key = str(self.entry(run).path)
        if key not in self._explainers:
            try:
                self._explainers[key] = explainer(self.predictor(run))
            except UsageError as exc:
                self._explainers[key] = str(exc)
        return self._explainers[key]

    def try_photo(self, run, photo, *, name: str | None = None) -> Tried:
        """The run's answer for the photo file ``photo`` (``name``: what to call it, an upload's own file name),
        and its heatmap.

        Raises:
            UsageError: the photo could not be read as an image (why, as extract.py would say it).
        """
        from ..serve.explain import write_heatmaps

        predictor = self.predictor(run)
        start = time.perf_counter()
        rows, proba, failed = predictor.predict([str(photo)])
        seconds = time.perf_counter() - start
        if failed or not len(rows):
            why = failed[0].reason if failed else "it could not be decoded"
            raise UsageError(f"not a photo the model can read: {why}")
        names = predictor.class_names
        top = {names[k]: float(p) for k, p in sorted(enumerate(proba[0]), key=lambda kp: -kp[1])}
        explaining, heatmap, why = self.explainer(run), None, None
        if isinstance(explaining, str):
            why = explaining
        else:
            found = explaining.explain([str(photo)], np.array([int(np.argmax(proba[0]))]))
            folder = self.pictures / f"try-{time.time_ns()}"
            written = write_heatmaps(folder, [str(photo)], found, names, shown={0: proba[0]},
                                     names={0: name} if name else None)
            heatmap = written.get(0)
        return Tried(top=top, heatmap=heatmap, why_no_heatmap=why, answered=_answered(predictor, self.entry(run)),
                     seconds=seconds)

    def examples(self, run, n: int = 6) -> list[str]:
        """A few of the run's test photos (one a class, then more), for the page's examples."""
        root = self.photo_root(run)
        if root is None:
            return []
        names, splits = RunFiles(self.entry(run).path).read_probabilities()
        ids, labels, _ = splits["test"]
        picked, seen = [], set()
        for i, k in enumerate(labels.tolist()):
            if k not in seen:
                picked.append(i)
                seen.add(k)
        picked += [i for i in range(len(ids)) if i not in picked]
        return [str(photo_path(root, ids[i])) for i in picked[:n] if photo_path(root, ids[i]).is_file()]

    def photo_root(self, run) -> str | None:
        from ..serve.explain import photo_root

        entry = self.entry(run)
        return photo_root(entry.members[0] if entry.members else entry.path)

    # --- Mistakes ------------------------------------------------------------------------------------------
    def confusion(self, run) -> tuple[list[str], np.ndarray]:
        """(class names, counts[true][predicted]) of the run's test photos."""
        names, splits = RunFiles(self.entry(run).path).read_probabilities()
        _, labels, proba = splits["test"]
        counts = np.zeros((len(names), len(names)), dtype=np.int64)
        np.add.at(counts, (labels, proba.argmax(1)), 1)
        return names, counts

    def mistakes(self, run, *, true: str | None = None, predicted: str | None = None,
                 heatmaps: bool = True) -> list[tuple[str, str]]:
        """The test photos the run got wrong, highest loss first (or the photos of one confusion cell): gallery
        items (picture, caption); the first :data:`HEATMAPS` drawn with their heatmaps where the run has them."""
        names, splits = RunFiles(self.entry(run).path).read_probabilities()
        ids, labels, proba = splits["test"]
        guess = proba.argmax(1)
        loss = -np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, None))
        if true is None and predicted is None:
            rows = np.flatnonzero(guess != labels)
        else:
            rows = np.flatnonzero((labels == names.index(true)) & (guess == names.index(predicted)))
        rows = rows[np.argsort(-loss[rows], kind="stable")][:MISTAKES]
        root = self.photo_root(run)
        if root is None:
            return []
        paths = [str(photo_path(root, ids[r])) for r in rows]
        items = [(p, f"{ids[r]}: {names[labels[r]]}, taken for {names[guess[r]]} ({proba[r, guess[r]]:.2f})")
                 for p, r in zip(paths, rows)]
        explaining = self.explainer(run) if heatmaps else "not asked"
        if isinstance(explaining, str) or not items:
            return items
        from ..serve.explain import write_heatmaps

        drawn = [i for i, p in enumerate(paths[:HEATMAPS]) if Path(p).is_file()]
        if drawn:
            found = explaining.explain([paths[i] for i in drawn], np.array([guess[rows[i]] for i in drawn]))
            written = write_heatmaps(self.pictures / f"mistakes-{time.time_ns()}", [paths[i] for i in drawn], found,
                                     names, shown={j: proba[rows[i]] for j, i in enumerate(drawn)})
            for j, png in written.items():
                items[drawn[j]] = (str(png), items[drawn[j]][1])
        return items

    # --- Review --------------------------------------------------------------------------------------------
    def cache_of(self, run) -> Path | None:
        entry = self.entry(run)
        if entry.members:  # an ensemble's photos: its first member's cache
            found = list_runs([entry.members[0]])
            entry = found[0] if found else entry
        return Path(entry.features[0]) if len(entry.features) == 1 else None

    def find_audit(self, run) -> dict | None:
        """The newest audit.json under the audits folder made of the run's cache, or None."""
        cache = self.cache_of(run)
        if cache is None or not self.audits_dir.is_dir():
            return None
        found = []
        for path in self.audits_dir.glob("*/audit.json"):
            try:
                summary = read_json(path)
            except (OSError, ValueError):
                continue
            if isinstance(summary, dict) and Path(str(summary.get("cache"))).resolve() == cache.resolve():
                found.append((path.stat().st_mtime, summary))
        return max(found, key=lambda f: f[0])[1] if found else None

    def run_audit(self, run, progress=None) -> dict:
        """Audit the run's cache (corrections applied) into the audits folder; its summary."""
        from ..auditing import audit, write_audit

        cache = self.cache_of(run)
        if cache is None:
            raise UsageError("the audit reads one cache: this run's head reads several side by side (or is a "
                             "fine-tune); audit each of its caches on its own")
        if progress:
            progress(0.1, desc="auditing the photos (copies, label errors, outliers)")
        found = audit(cache, corrections=self.corrections if self.corrections.is_file() else None)
        if progress:
            progress(0.8, desc="drawing the audit's pictures")
        _, summary = write_audit(found, self.audits_dir)
        return summary

    def findings(self, summary: dict, *, kind: str | None = None, label: str | None = None) -> list[dict]:
        """One row a photo to review: kind, photo id, class, what the audit suggests, and the decision taken;
        test photos leaked from training first, then label errors, copies and outliers."""
        rows = []
        leaked = set(summary.get("leakage", {}).get("leaked_ids", []))
        for pair in summary.get("duplicates", {}).get("near", []):
            for me, other in ((pair["a"], pair["b"]), (pair["b"], pair["a"])):
                kind_of = "leaked copy" if me in leaked else "near copy"
                rows.append({"kind": kind_of, "id": me, "class": _class_of(me), "suggestion":
                             f"similar to {other} ({pair['similarity']:.3f})", "other": other})
        for group in summary.get("duplicates", {}).get("groups", []):
            for me in group["ids"][1:]:
                rows.append({"kind": "leaked copy" if me in leaked else "same file", "id": me,
                             "class": _class_of(me), "suggestion": f"the same as {group['ids'][0]}",
                             "other": group["ids"][0]})
        for issue in summary.get("label_issues", []):
            rows.append({"kind": "label error", "id": issue["id"], "class": issue["given"],
                         "suggestion": f"relabel as {issue['suggested']}", "suggested": issue["suggested"]})
        for outlier in summary.get("outliers", []):
            rows.append({"kind": "outlier", "id": outlier["id"], "class": outlier["label"],
                         "suggestion": f"unlike its class (score {outlier['score']:.3f})"})
        order = {k: i for i, k in enumerate(KINDS)}
        unique, seen = [], set()
        for row in sorted(rows, key=lambda r: order[r["kind"]]):
            if (row["kind"], row["id"]) not in seen:
                seen.add((row["kind"], row["id"]))
                unique.append(row)
        decided = self.decisions()
        for row in unique:
            d = decided.get(row["id"])
            row["decision"] = "" if d is None else d.decision + (f" as {d.label}" if d.label else "")
        return select(unique, kind=kind, label=label)

    def decisions(self) -> dict:
        """The decisions taken so far (the corrections file's, the last about each photo); none before the first."""
        if not self.corrections.exists():
            return {}
        return read_corrections(self.corrections).decisions

    def decide(self, run, photo_id: str, decision: str, *, label: str | None = None):
        """Record one decision about a photo of the run's data, at once (an app restarted finds it there)."""
        root = self.photo_root(run)
        if root is None:
            raise UsageError("the decisions name photo files: this run's photos are a TFDS set, not a folder")
        if decision not in DECISIONS:
            raise UsageError(f"{decision}: give one of {', '.join(DECISIONS)}")
        made = decide(root, photo_id, decision, label=label if decision == "relabel" else None)
        append_decision(self.corrections, made)
        return made

    def command(self, run) -> str:
        """What applies the corrections to the run's data: classify.py's command where the app was started from
        the command line, else the Python call."""
        cache, corrections = self.cache_of(run), self.corrections.resolve()
        if self.flags is None:
            return f"tl.classify({[str(cache)] if cache else None!r}, corrections={str(corrections)!r})"
        features = f"{{features={cache}}} " if cache is not None else ""
        return ToolkitError(f"python classify.py {features}{{corrections={corrections}}}").render(self.flags)


def select(findings: list[dict], *, kind: str | None = None, label: str | None = None) -> list[dict]:
    """The findings of one kind and one class (None, "" or "all": any)."""
    return [r for r in findings if (kind in (None, "", "all") or r["kind"] == kind)
            and (label in (None, "", "all") or r["class"] == label)]


def _class_of(photo_id: str) -> str:
    return photo_id.split("/")[0] if "/" in photo_id else ""


def _answered(predictor, entry: RunEntry) -> str:
    runtime = getattr(predictor, "runtime", "tf")
    precision = (getattr(predictor, "meta", None) or {}).get("precision") or "fp32"
    return f"{entry.path.name} ({entry.method} on {entry.backbone}; {runtime} at {precision})"


def problem_text(exc: BaseException) -> str:
    """What the page says of an error: a toolkit error's own line, anything else its kind (never a traceback)."""
    if isinstance(exc, ToolkitError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:300]}"
