"""The shared parameter checks: one helper per kind of value, each naming its parameter.

In scikit-learn's declarative spirit (``_parameter_constraints``): a caller says what a
value must be (a whole number in a range, a finite number in an interval, one of a few
choices) and the helper refuses anything else with one message in the caller's terms
(``{param}``, rendered as a flag on the command line, see :mod:`features.errors`). A bool
is never a number here: ``epochs=True`` is refused, not read as 1.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import UsageError

MAX_SEED = 2**32 - 1  # what NumPy's, scikit-learn's and Keras' seeding accept
MAX_IMAGE_SIZE = 1024  # far past any backbone's training size; 100,000 px crashed TensorFlow
MAX_BATCH_SIZE = 4096  # a billion made tf.data spin for minutes, deaf to Ctrl-C


def _is_whole(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def whole(value, param: str, low: int, high: int | None = None, what: str = "", high_text: str | None = None) -> int:
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


def optional_whole(value, param: str, low: int, high: int | None = None, what: str = "") -> int | None:
    """:func:`whole`, or None (the parameter's "not given")."""
    return None if value is None else whole(value, param, low, high, what)


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


def choice(value, param: str, choices, one_of: bool = False) -> str:
    """One of ``choices`` ("choose a or b", or "choose one of a, b, c" with ``one_of``)."""
    choices = list(choices)
    if value in choices:
        return value
    listed = f"one of {', '.join(choices)}" if one_of else \
        (" or ".join(choices) if len(choices) < 3 else f"{', '.join(choices[:-1])} or {choices[-1]}")
    raise UsageError(f"{{{param}}} {value}: choose {listed}")


def seed(value, param: str = "seed") -> int:
    """A seed NumPy, scikit-learn and Keras all take: a whole number from 0 to 2**32 - 1."""
    return whole(value, param, 0, MAX_SEED)  # NumPy's integers are Integral too


def batch_size(value, param: str = "batch_size") -> int:
    """Images per step: a whole number from 1 to :data:`MAX_BATCH_SIZE`."""
    return whole(value, param, 1, MAX_BATCH_SIZE)
