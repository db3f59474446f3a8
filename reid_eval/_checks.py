"""Type checks of option values, shared by the option dataclasses (a string or a bool where a number belongs is
refused with the option's name instead of failing later inside torch or NumPy)."""
from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ['is_int', 'is_number']


def is_int(value: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
