"""Clocks, ISO 8601 rendering, and parsing of the datetimes and durations users type.

Rendering is on every command's hot path, so it uses `time` only; `datetime` is imported lazily by the parsers,
which only `clean` and `unlock` need.
"""

from __future__ import annotations

import time

from .errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any

_DURATION = r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$"
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Longest duration accepted anywhere (100 years): beyond it, clocks, select() and SQLite integers overflow.
MAX_SECONDS = 100 * 365 * 86400
# Datetimes are kept within years 1 to 9999 as Unix seconds.
_MIN_TS, _MAX_TS = -62135596800, 253402300799


def now() -> int:
    """Wall-clock Unix seconds, the unit of every stored timestamp."""
    return int(time.time())


def iso(ts: float | None) -> str | None:
    """Render Unix seconds as ISO 8601 in the host's local offset, e.g. 2026-05-01T02:00:00+09:00."""
    if ts is None:
        return None
    lt = time.localtime(int(ts))
    off = lt.tm_gmtoff if lt.tm_gmtoff is not None else -time.timezone
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return "%s%s%02d:%02d" % (time.strftime("%Y-%m-%dT%H:%M:%S", lt), sign, off // 3600, (off % 3600) // 60)


def with_iso(obj: dict[str, Any], *fields: str) -> dict[str, Any]:
    """A copy of `obj` with a `<field>_iso` twin right after each Unix-seconds field, the reference's convention."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out[key] = value
        if key in fields:
            out[key + "_iso"] = iso(value)
    return out


def parse_datetime(text: str, flag: str) -> int:
    """Parse a user's datetime into Unix seconds; a value without an offset is local time.

    Accepts ISO 8601 dates and datetimes (with `T` or a space, optional seconds and fraction, `Z` or `±HH:MM`),
    and `@SECONDS` for a raw Unix time.
    """
    import datetime as dt

    s = text.strip()
    if s.startswith("@"):
        try:
            value = float(s[1:])
        except ValueError:
            raise InvalidArgument("Invalid %s: %r is not a Unix time after '@'" % (flag, text)) from None
        if not _MIN_TS <= value <= _MAX_TS:
            raise InvalidArgument("Invalid %s: %r is outside the years 1 to 9999" % (flag, text))
        return int(value)
    candidate = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
    try:
        moment = dt.datetime.fromisoformat(candidate)
    except ValueError:
        try:
            moment = dt.datetime.combine(dt.date.fromisoformat(candidate), dt.time())
        except ValueError:
            raise InvalidArgument(
                "Invalid %s: %r is not a datetime; use ISO 8601 such as 2026-01-31, 2026-01-31T14:00 or "
                "2026-01-31T14:00:00+09:00" % (flag, text)
            ) from None
    if moment.tzinfo is None:
        return int(time.mktime(moment.timetuple()))
    return int(moment.timestamp())


def parse_duration(text: str, flag: str, allow_zero: bool = True) -> float:
    """Parse seconds given as a number or with a suffix s, m, h or d (`90`, `30m`, `2h`, `1.5d`)."""
    import re

    m = re.match(_DURATION, text, re.IGNORECASE)
    if not m:
        raise InvalidArgument(
            "%s: %r is not a duration; use seconds or a number with s, m, h or d (e.g. 30m)" % (flag, text)
        )
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value > MAX_SECONDS:
        raise InvalidArgument("%s: %r is longer than 100 years" % (flag, text))
    if value == 0 and not allow_zero:
        raise InvalidArgument("%s must be greater than zero" % flag)
    return value


def parse_seconds(text: str, flag: str, allow_zero: bool = True) -> float:
    """Parse a plain, non-negative number of seconds (timeouts and grace periods)."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument("%s: %r is not a number of seconds" % (flag, text)) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidArgument("%s: %r is not a finite number of seconds" % (flag, text))
    if value < 0:
        raise InvalidArgument("%s must not be negative (got %s)" % (flag, text))
    if value > MAX_SECONDS:
        raise InvalidArgument("%s: %s seconds is longer than 100 years" % (flag, text))
    if value == 0 and not allow_zero:
        raise InvalidArgument("%s must be greater than zero" % flag)
    return value
