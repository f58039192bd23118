"""Flow control options (see docs/flow-control.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

__all__ = ["Unique"]


def seconds_of(value: float | dt.timedelta, what: str) -> float:
    """``value`` in seconds, which must be more than 0."""
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"{what} must be a number of seconds above 0, got {value!r}")
    return float(seconds)


@dataclass(frozen=True, slots=True)
class Unique:
    """At most one job with this key at a time: ``task.options(unique=Unique(key, ttl))``.

    While a job enqueued with the key is held, enqueueing again with it writes nothing and
    returns the held job's handle, with ``handle.deduplicated`` true.

    Attributes:
        key: The key (any string; one per queue).
        ttl: Seconds (or a timedelta) the key lives at most, whatever happens: a bound for a
            job that never starts or never ends (its worker's lease is recovered long before).
        until: ``"success"`` (default): held until the job ends, however it ends (succeeded,
            dead or cancelled), so duplicates are refused while it is queued, scheduled,
            running or waiting to retry. ``"start"``: held only while it waits, freed when a
            worker starts it, so one more may be enqueued while it runs.
    """

    key: str
    ttl: float | dt.timedelta
    until: Literal["success", "start"] = "success"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"a Unique key must be a non-empty string, got {self.key!r}")
        if self.until not in ("success", "start"):
            raise ValueError(f'until must be "success" or "start", got {self.until!r}')
        seconds_of(self.ttl, "a Unique ttl")

    @property
    def ttl_seconds(self) -> float:
        """``ttl`` in seconds."""
        return seconds_of(self.ttl, "a Unique ttl")
