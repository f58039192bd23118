"""Cron expressions and their fire times in an IANA time zone.

Five fields (minute hour day-of-month month day-of-week) or six with a leading seconds field.
Each field is ``*``, a number, a name (``jan``..``dec``, ``sun``..``sat``), a range ``a-b``, a
step ``*/n``, ``a/n`` or ``a-b/n``, or a comma-separated list of these; ``?`` means ``*``. As in
Vixie cron, when both day-of-month and day-of-week are restricted a day matching either one
fires, and day-of-week 7 is Sunday like 0. Macros: ``@yearly`` (``@annually``), ``@monthly``,
``@weekly``, ``@daily`` (``@midnight``) and ``@hourly``.

Fire times are wall-clock times in the schedule's zone, turned into instants as PEP 495 (and
``java.time``) do at a daylight-saving change:

- a wall time that does not exist (clocks jump forward over it) fires the length of the jump
  later: ``30 2 * * *`` in Europe/Berlin fires at 03:30 on the day of the spring change;
- a wall time that exists twice (clocks go back over it) fires once, at its first occurrence.

Schedules that need even spacing through such changes use UTC or ``every=``.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "zone"]

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: How far ahead a fire time is looked for: an expression that matches nothing within it (such
#: as ``0 0 30 2 *``) is refused when it is parsed.
_HORIZON_YEARS = 10


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        ValueError: No such zone in the IANA database.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (expected an IANA name such as 'Europe/Berlin')"
        ) from exc


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    #: Value of the first name (``jan`` is 1, ``sun`` is 0).
    name_base: int = 0


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, tuple(_MONTHS), 1)
# 7 is accepted for Sunday and folded onto 0.
_DOW = _Field("day-of-week", 0, 7, tuple(_DAYS), 0)


def _value(text: str, f: _Field, expr: str) -> int:
    low = text.lower()
    if low in f.names:
        return f.names.index(low) + f.name_base
    if not text.isdigit():
        raise ValueError(f"cron {expr!r}: {f.name} value {text!r} is not a number")
    n = int(text)
    if not f.low <= n <= f.high:
        raise ValueError(f"cron {expr!r}: {f.name} value {n} outside {f.low}-{f.high}")
    return n


def _parse_field(text: str, f: _Field, expr: str) -> tuple[list[int], bool]:
    """The sorted values a field allows, and whether it is unrestricted (``*``)."""
    values: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            raise ValueError(f"cron {expr!r}: empty item in {f.name} field {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"cron {expr!r}: {f.name} step {step_text!r} is not a number >= 1")
            step = int(step_text)
        if base in ("*", "?"):
            lo, hi = f.low, f.high
            star = star or not slash
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _value(a, f, expr), _value(b, f, expr)
            if lo > hi:
                raise ValueError(f"cron {expr!r}: {f.name} range {base!r} runs backwards")
        else:
            lo = _value(base, f, expr)
            hi = f.high if slash else lo
        values.update(range(lo, hi + 1, step))
    if f is _DOW:
        if 7 in values:
            values.discard(7)
            values.add(0)
        star = star or values == set(range(7))
    return sorted(values), star


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression; :meth:`next_after` gives its fire times."""

    expr: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expr: str) -> Cron:
        """Parse ``expr``.

        Raises:
            ValueError: The expression is malformed, or matches no time in the next 10 years.
        """
        text = _MACROS.get(expr.strip().lower(), expr)
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise ValueError(
                f"cron {expr!r}: expected 5 fields (minute hour day month weekday) or 6 "
                f"(seconds first), got {len(fields)}"
            )
        parsed = [
            _parse_field(text, f, expr)
            for text, f in zip(fields, (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW), strict=True)
        ]
        cron = cls(
            expr=expr,
            seconds=tuple(parsed[0][0]),
            minutes=tuple(parsed[1][0]),
            hours=tuple(parsed[2][0]),
            days=tuple(parsed[3][0]),
            months=tuple(parsed[4][0]),
            weekdays=frozenset(parsed[5][0]),
            any_day=parsed[3][1],
            any_weekday=parsed[5][1],
        )
        if cron._next_wall(dt.datetime(2000, 1, 1)) is None:
            raise ValueError(f"cron {expr!r} matches no time (within {_HORIZON_YEARS} years)")
        return cron

    def _day_matches(self, d: dt.date) -> bool:
        in_month = d.day in self.days
        on_weekday = (d.weekday() + 1) % 7 in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return on_weekday
        if self.any_weekday:
            return in_month
        return in_month or on_weekday

    def _next_wall(self, after: dt.datetime) -> dt.datetime | None:
        """The first matching wall-clock time (naive) strictly after ``after`` (naive)."""
        t = after.replace(microsecond=0) + dt.timedelta(seconds=1)
        end_year = t.year + _HORIZON_YEARS
        while t.year <= end_year:
            if t.month not in self.months:
                i = bisect.bisect_left(self.months, t.month)
                t = (
                    t.replace(month=self.months[i], day=1, hour=0, minute=0, second=0)
                    if i < len(self.months)
                    else dt.datetime(t.year + 1, self.months[0], 1)
                )
                continue
            if not self._day_matches(t.date()):
                t = dt.datetime.combine(t.date() + dt.timedelta(days=1), dt.time())
                continue
            if t.hour not in self.hours:
                i = bisect.bisect_left(self.hours, t.hour)
                if i == len(self.hours):
                    t = dt.datetime.combine(t.date() + dt.timedelta(days=1), dt.time())
                else:
                    t = t.replace(hour=self.hours[i], minute=0, second=0)
                continue
            if t.minute not in self.minutes:
                i = bisect.bisect_left(self.minutes, t.minute)
                if i == len(self.minutes):
                    t = t.replace(minute=0, second=0) + dt.timedelta(hours=1)
                else:
                    t = t.replace(minute=self.minutes[i], second=0)
                continue
            if t.second not in self.seconds:
                i = bisect.bisect_left(self.seconds, t.second)
                if i == len(self.seconds):
                    t = t.replace(second=0) + dt.timedelta(minutes=1)
                else:
                    t = t.replace(second=self.seconds[i])
                continue
            return t
        return None

    def next_after(self, after_ms: int, tz: dt.tzinfo) -> int | None:
        """The first fire time strictly after ``after_ms`` (unix ms), in unix ms; None when
        there is none within the horizon."""
        after = dt.datetime.fromtimestamp(after_ms / 1000, tz)
        cursor = after.replace(tzinfo=None)
        # A wall time in a skipped hour lands later than the real wall times just after the
        # hour (02:45 -> 03:45, while 03:15 is 03:15): once one is met, later wall times are
        # read up to its landing time, and the earliest instant wins.
        best: int | None = None
        best_wall: dt.datetime | None = None
        while True:
            wall = self._next_wall(cursor)
            if wall is None or (best_wall is not None and wall > best_wall):
                return best
            cursor = wall
            # fold=0: a repeated wall time means its first occurrence; a skipped one lands the
            # length of the jump later (PEP 495).
            aware = wall.replace(tzinfo=tz)
            instant = round(aware.timestamp() * 1000)
            if instant <= after_ms or (best is not None and instant >= best):
                continue  # an occurrence already past (the second pass of a repeated hour)
            landed = dt.datetime.fromtimestamp(instant / 1000, tz).replace(tzinfo=None)
            if landed == wall and best is None:
                return instant
            best, best_wall = instant, landed
