"""Helpers for checking what callers pass: what counts as a number or a flag, and a value shown in an error.

Every check of the SDK's arguments, settings and answers (:mod:`yolo_edge.remote.wire`'s options
and limits, the clients', the pool's) uses them, so ``True`` is never a number and a huge
or odd value never breaks the message that refuses it.

>>> is_int(3), is_int(True), is_real(2.5), is_real(10**400)
(True, False, True, False)
>>> short_repr("x" * 100, limit=20), short_repr(10**5000)
("'xxxxxxxxxxxxxxxx...", '<an integer of 16610 bits>')
>>> check_flag(1, "return_meta")
Traceback (most recent call last):
  ...
yolo_edge.errors.ConfigError: return_meta must be True or False, got 1
"""

from __future__ import annotations

import numbers
import reprlib
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["check_flag", "is_int", "is_real", "short_repr"]


def is_int(value: Any) -> bool:
    """An integer (Python's or numpy's), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A real number (not a bool) that converts to a float."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        float(value)
    except (OverflowError, ValueError):  # an int too large for a float
        return False
    return True


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother = 60, 60


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` for error messages: bounded, and safe on huge ints and odd objects."""
    try:
        text = _REPR.repr(value)
    except Exception:  # an int above the int-to-str digit limit, a failing __repr__
        text = (f"<an integer of {value.bit_length()} bits>" if isinstance(value, int)
                else f"<{type(value).__name__}>")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_flag(value: Any, name: str) -> None:
    """Refuse anything but ``True`` or ``False`` for the setting ``name`` (truthiness is not a flag)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {short_repr(value)}")
