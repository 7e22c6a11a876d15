"""Head files (``head.skops``), their one owner: skops' format, loaded with an allow-list of the types a
head holds, so a crafted file cannot run code."""

from __future__ import annotations

from ..errors import UsageError
from ..io import DATA_LIMIT, read_regular
from .fitted import FittedHead

HEAD_FORMAT = 1
# Types a head file may hold beyond skops' defaults: exactly what the heads above use.
TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
)


def save_head(path, fitted: FittedHead, meta: dict) -> None:
    """Save a fitted head with what a predictor must match (class names, backbone, ...).

    The format is skops', made to load scikit-learn models without running arbitrary code.
    """
    import skops.io as sio

    sio.dump({"format": HEAD_FORMAT, "head": fitted.name, "params": fitted.params,
              "pipeline": fitted.pipeline, "meta": meta}, path)


def load_run_head(files) -> dict:
    """A run folder's head (:func:`load_head`), checked against the run's record: the head its config.json names,
    and a classifier of the type that head's registry entry makes (a head.skops from another run is refused).

    Args:
        files: the run folder's :class:`~features.records.runs.RunFiles`.

    Raises:
        UsageError: as :func:`load_head`, or a head file that is not the run's.
    """
    from ..records.runs import RunFiles
    from .registry import HEADS, make_head

    path = files / RunFiles.HEAD
    head = load_head(path)
    recorded = files.read_config().get("head")
    name = head.get("head")
    if name != recorded or recorded not in HEADS:
        raise UsageError(f"{path}: holds a {name!r} head, but the run's config.json records {recorded!r}: a head "
                         "file from another run; run classify.py again")
    steps = getattr(head.get("pipeline"), "steps", None)
    expected = type(make_head(recorded).steps[-1][1])
    if not steps or type(steps[-1][1]) is not expected:
        got = type(steps[-1][1]).__name__ if steps else "no pipeline"
        raise UsageError(f"{path}: a {recorded} head holds a {expected.__name__}, this one a {got}: a damaged or "
                         "edited head file; run classify.py again")
    return head


def load_head(path) -> dict:
    """Load a head saved by :func:`save_head`, refusing any type a head never needs.

    Raises:
        UsageError: not a head file, or it holds types outside the allow-list.
    """
    import skops.io as sio

    try:
        data = read_regular(path, DATA_LIMIT)
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read as a head file ({exc.strerror or exc})") from None
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - a file skops cannot even list is not a head file, whatever it is
        raise UsageError(f"{path}: not a head file written by classify.py ({exc})") from None
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UsageError(f"{path}: refusing to load types a head never holds: {', '.join(unexpected)}")
    obj = sio.loads(data, trusted=list(untrusted))  # the bytes that were checked: the file is not read again
    if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
        raise UsageError(f"{path}: not a head file of format {HEAD_FORMAT}")
    return obj
