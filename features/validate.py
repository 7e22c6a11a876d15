"""The shared parameter checks: one helper per kind of value, each naming its parameter.

In scikit-learn's declarative spirit (``_parameter_constraints``): a caller says what a
value must be (a whole number in a range, a finite number in an interval, one of a few
choices) and the helper refuses anything else with one message in the caller's terms
(``{param}``, rendered as a flag on the command line, see :mod:`features.errors`). A bool
is never a number here: ``epochs=True`` is refused, not read as 1.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from pathlib import Path

from .errors import UsageError

MAX_SEED = 2**32 - 1  # what NumPy's, scikit-learn's and Keras' seeding accept
MAX_IMAGE_SIZE = 1024  # far past any backbone's training size; 100,000 px crashed TensorFlow
MAX_BATCH_SIZE = 4096  # a billion made tf.data spin for minutes, deaf to Ctrl-C


def _is_whole(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def whole(value, param: str, *, low: int, high: int | None = None, what: str = "",
          high_text: str | None = None) -> int:
    """A whole number from ``low`` (to ``high``, where given).

    Args:
        what: words after "a whole number" (" of folds").
        high_text: how the message says ``high`` where it is another parameter's value
            ("{epochs} - 1 (9)").

    Raises:
        UsageError: not a whole number (a bool, a float, a string), or out of range.
    """
    if _is_whole(value) and value >= low and (high is None or value <= high):
        return int(value)
    if high is None:
        raise UsageError(f"{{{param}}} {value}: must be a whole number{what}, at least {low}")
    raise UsageError(f"{{{param}}} {value}: give a whole number{what} from {low} to {high_text or high}")


def optional_whole(value, param: str, *, low: int, high: int | None = None, what: str = "") -> int | None:
    """:func:`whole`, or None (the parameter's "not given")."""
    return None if value is None else whole(value, param, low=low, high=high, what=what)


def positive(value, param: str, also: str = "") -> float:
    """A finite number above zero (a learning rate, a regularisation strength).

    Args:
        also: other values the parameter takes, for the message (", 'scale' or 'auto'").
    """
    if _is_real(value) and math.isfinite(value) and value > 0:
        return float(value)
    raise UsageError(f"{{{param}}} {value}: give a finite number above zero{also}")


def fraction(value, param: str, hint: str = "") -> float:
    """A number from 0 (none) up to, not including, 1 (a decay, a smoothing)."""
    if _is_real(value) and math.isfinite(value) and 0 <= value < 1:
        return float(value)
    raise UsageError(f"{{{param}}} {value}: give a number from 0 (none) to below 1{hint}")


def choice(value, param: str, choices, *, one_of: bool = False) -> str:
    """One of ``choices`` ("choose a or b", or "choose one of a, b, c" with ``one_of``)."""
    choices = list(choices)
    if value in choices:
        return value
    listed = f"one of {', '.join(choices)}" if one_of else \
        (" or ".join(choices) if len(choices) < 3 else f"{', '.join(choices[:-1])} or {choices[-1]}")
    raise UsageError(f"{{{param}}} {value}: choose {listed}")


def seed(value, param: str = "seed") -> int:
    """A seed NumPy, scikit-learn and Keras all take: a whole number from 0 to 2**32 - 1."""
    return whole(value, param, low=0, high=MAX_SEED)  # NumPy's integers are Integral too


def batch_size(value, param: str = "batch_size") -> int:
    """Images per step: a whole number from 1 to :data:`MAX_BATCH_SIZE`."""
    return whole(value, param, low=1, high=MAX_BATCH_SIZE)


def similarity(value, param: str) -> float:
    """A cosine similarity from which two things count as alike: a number in (0, 1]."""
    if _is_real(value) and math.isfinite(value) and 0 < value <= 1:
        return float(value)
    shown = f"{value:g}" if _is_real(value) else repr(value)
    raise UsageError(f"{{{param}}} {shown}: a cosine similarity; give a number in (0, 1]")


def path(value, param: str, what: str = "a file or folder") -> Path:
    """A path given as a string or an ``os.PathLike`` (not None, a number or a list), not empty."""
    if isinstance(value, (str, os.PathLike)) and str(os.fspath(value)):
        return Path(value)
    raise UsageError(f"{{{param}}} {value!r}: give the path of {what} (a string or a pathlib.Path)")


def optional_path(value, param: str, what: str = "a file or folder") -> Path | None:
    """:func:`path`, or None (the parameter's "not given")."""
    return None if value is None else path(value, param, what)


def paths(value, param: str, what: str = "files") -> list[Path]:
    """One path or a list of them (a bare string is one path, never its characters)."""
    if isinstance(value, (str, os.PathLike)):
        return [path(value, param, what)]
    if isinstance(value, (list, tuple)) and value:
        return [path(v, param, what) for v in value]
    raise UsageError(f"{{{param}}} {value!r}: give a path or a list of paths of {what}")


def optional_jobs(value, param: str = "n_jobs") -> int | None:
    """Parallel jobs as joblib takes them: None, -1 (all cores) or a whole number from 1."""
    if value is None:
        return None
    if _is_whole(value) and value == -1:
        return -1
    return whole(value, param, low=1, what=" of jobs (or -1 for all cores)")
