"""Durations as users write them in manifests and policies: ``90s``, ``15m``, ``12h``, ``2d``."""

import math
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``; a bare number is seconds. Raises ValueError with the reason."""
    if isinstance(text, int | float):
        try:
            return _finite(float(text))
        except OverflowError:  # an int too large for a float
            raise ValueError("a duration must be a finite number") from None
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        return _finite(value)
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"{text[:64]!r} is not a duration (use e.g. 90s, 15m, 12h, 1h30m, 2d)")
    return _finite(total)


def _finite(value: float) -> float:
    # nan compares false with every limit, so it would slip past every guardrail.
    if not math.isfinite(value):
        raise ValueError("a duration must be a finite number")
    if value < 0:
        raise ValueError("a duration cannot be negative")
    return value


def format_duration(seconds: float) -> str:
    """The shortest readable form: ``45s``, ``12m``, ``3h5m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m}m{s}s" if s else f"{m}m"
    h, rest = divmod(seconds, 3600)
    m = rest // 60
    return f"{h}h{m}m" if m else f"{h}h"
