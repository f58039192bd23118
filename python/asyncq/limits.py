"""Rate and concurrency limits, fair keys and ordered keys (see docs/flow-control.md).

A task with any of them puts its jobs in *groups*: one per task and combination of key
values, computed here at enqueue from each call's arguments and written into the job's
record. Redis does the rest, in the scripts (lib/common.lua, "Groups and limiters"): a
group's jobs are leased only while each of its limiters has room, and groups take turns.
This module only names groups and limiters and spells out their settings.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ConcurrencyLimit", "Grouping", "RateLimit", "parse_rate"]

_UNITS = {"s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|m|min|h|d)\s*")
# A key value as it is written into limiter names: bounded, and never a tab or newline.
_MAX_KEY_VALUE = 200

Key = str | Callable[..., object]


def parse_rate(rate: str) -> tuple[int, int]:
    """``"20/s"`` -> (20, 1000): starts allowed per period, and the period in ms.

    Units: ``s``, ``m`` (minutes), ``h``, ``d``, optionally with a count (``"10/5s"``).

    Raises:
        ValueError: The text is not of that form, or allows no start.
    """
    m = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    if m is None or int(m.group(1)) < 1:
        raise ValueError(
            f'a rate is "<starts>/<period>" with a period in s, m, h or d, such as "20/s" '
            f'or "100/5m", got {rate!r}'
        )
    return int(m.group(1)), int(m.group(2) or 1) * _UNITS[m.group(3)]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``rate`` starts per period, per value of ``key`` (or task-wide without one).

    Attributes:
        rate: ``"<starts>/<period>"``, such as ``"5/s"``, ``"100/m"``, ``"1000/h"``.
        key: The name of a task parameter, or a callable over the task's arguments that
            returns the key value (a str or int); each value gets its own limiter.
        burst: Starts allowed beyond the rate after a quiet spell; 0 (default) means no
            window of one period ever sees more than ``rate``.
        name: The limiter's name (default: the parameter's or the callable's name).
    """

    rate: str
    key: Key | None = None
    burst: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        parse_rate(self.rate)
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 0:
            raise ValueError(f"burst must be a whole number >= 0, got {self.burst!r}")


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most ``limit`` jobs running at once, per value of ``key`` (or task-wide).

    A run's slot is freed when it ends: succeeded, failed, handed back, or its lease expired
    (a worker that died frees its slots within the lease).

    Attributes:
        limit: Most jobs running at once (0 holds every job until raised).
        key: A task parameter's name, or a callable over the task's arguments.
        name: The limiter's name (default: the parameter's or the callable's name).
    """

    limit: int
    key: Key | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(f"a concurrency limit is a whole number >= 0, got {self.limit!r}")


_PART = re.compile(r"([a-z]+)=(-?\d+)")


def settings_parts(
    rate_limit: str | None = None, burst: int = 0, concurrency_limit: int | None = None
) -> dict[str, int]:
    """A limiter family's settings as parts: ``c`` most running, ``r`` starts per ``p`` ms,
    ``b`` burst (the scripts' ``lim_settings`` reads the same names)."""
    parts = {}
    if concurrency_limit is not None:
        parts["c"] = concurrency_limit
    if rate_limit is not None:
        count, period = parse_rate(rate_limit)
        parts.update(r=count, p=period, b=burst)
    return parts


def parse_settings(text: str) -> dict[str, int]:
    """``"c=2 r=20 p=1000 b=0"`` -> ``{"c": 2, "r": 20, "p": 1000, "b": 0}``."""
    return {k: int(v) for k, v in _PART.findall(text)}


def settings_text(parts: Mapping[str, int]) -> str:
    """The settings text of ``parts``, as workers write it and the scripts read it."""
    order = [k for k in "crpb" if k in parts] + sorted(set(parts) - set("crpb"))
    return " ".join(f"{k}={parts[k]}" for k in order)


def settings(
    rate_limit: str | None = None, burst: int = 0, concurrency_limit: int | None = None
) -> str:
    """The settings text of a limiter family, as the scripts read it."""
    return settings_text(settings_parts(rate_limit, burst, concurrency_limit))


def _key_label(key: Key, name: str | None) -> str:
    label = name or (key if isinstance(key, str) else getattr(key, "__qualname__", None))
    if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.:<>-]{1,64}", label):
        raise ValueError(
            f"a limit's key needs a name of 1 to 64 letters, digits or _ . : - ; pass name=, "
            f"got {label!r}"
        )
    return label


def _value_text(label: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"key {label!r} must be a str or an int, got {type(value).__name__}")
    # Escaped so no value can run into the next key's text in a group id ('|') or a spec.
    text = str(value).replace("%", "%25").replace("\t", "%09").replace("\n", "%0A")
    text = text.replace("|", "%7C")
    if len(text) > _MAX_KEY_VALUE:
        raise ValueError(f"key {label!r} is longer than {_MAX_KEY_VALUE} characters")
    return text


@dataclass(frozen=True, slots=True)
class _Keyed:
    """One key a task's groups are split by: its label and how to read it from a call."""

    label: str
    key: Key

    def read(self, sig: inspect.Signature | None, args: tuple[Any, ...], kw: dict[str, Any]) -> str:
        if callable(self.key):
            return _value_text(self.label, self.key(*args, **kw))
        if sig is None:
            raise TypeError(f"key {self.key!r} names a parameter, but the task has no signature")
        bound = sig.bind_partial(*args, **kw)
        bound.apply_defaults()
        if self.key not in bound.arguments:
            raise TypeError(f"key {self.key!r} is not given (or not a parameter of the task)")
        return _value_text(self.label, bound.arguments[self.key])


class Grouping:
    """How one task's jobs are grouped: its limiters and keys, fixed at decoration.

    Attributes:
        families: Limiter family -> settings text, declared by workers on their queues.
    """

    def __init__(
        self,
        task: str,
        fn: Callable[..., Any],
        *,
        rate_limit: str | None = None,
        burst: int = 0,
        concurrency_limit: int | None = None,
        limits: Sequence[RateLimit | ConcurrencyLimit] = (),
        fair_key: Key | None = None,
        fair_weights: Mapping[str, int] | Callable[[str], int] | None = None,
        ordered_key: Key | None = None,
    ) -> None:
        if "\t" in task or "|" in task:
            raise ValueError(f"a task under limits cannot have a tab or | in its name: {task!r}")
        try:
            self._sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self._sig = None
        self.task = task
        self.families: dict[str, str] = {}
        # Task-wide limiter: one instance, named by its family.
        self._wide: str | None = None
        if rate_limit is not None or concurrency_limit is not None:
            if concurrency_limit is not None:
                ConcurrencyLimit(concurrency_limit)
            if rate_limit is not None:
                RateLimit(rate_limit, burst=burst)
            self._wide = f"t:{task}"
            self.families[self._wide] = settings(rate_limit, burst, concurrency_limit)
        # Keyed limiters: family -> (key, settings parts); a rate and a concurrency limit on
        # one key share a limiter.
        keyed: dict[str, tuple[_Keyed, dict[str, Any]]] = {}
        for lim in limits:
            if not isinstance(lim, RateLimit | ConcurrencyLimit):
                raise TypeError(f"limits takes RateLimit and ConcurrencyLimit, got {lim!r}")
            if lim.key is None:
                raise ValueError(
                    f"{lim!r} has no key: use rate_limit= or concurrency_limit= for a "
                    "task-wide limit"
                )
            label = _key_label(lim.key, lim.name)
            fam = f"k:{task}:{label}"
            entry = keyed.setdefault(fam, (_Keyed(label, lim.key), {}))
            kind = "rate" if isinstance(lim, RateLimit) else "concurrency"
            if kind in entry[1]:
                raise ValueError(f"two {kind} limits on key {label!r}: give one a name=")
            entry[1][kind] = lim
        self._keyed = []
        for fam, (k, parts) in keyed.items():
            rate, conc = parts.get("rate"), parts.get("concurrency")
            self.families[fam] = settings(
                rate.rate if rate else None, rate.burst if rate else 0, conc.limit if conc else None
            )
            self._keyed.append((fam, k))
        self._fair = None if fair_key is None else _Keyed(_key_label(fair_key, None), fair_key)
        if fair_weights is not None and fair_key is None:
            raise ValueError("fair_weights goes with fair_key")
        self._weights = fair_weights
        self._ordered: tuple[str, _Keyed] | None = None
        if ordered_key is not None:
            label = _key_label(ordered_key, None)
            fam = f"o:{task}:{label}"
            self._ordered = (fam, _Keyed(label, ordered_key))
            self.families[fam] = "c=1"

    def _weight(self, value: str) -> str:
        w: object = 1
        if callable(self._weights):
            w = self._weights(value)
        elif self._weights is not None:
            w = self._weights.get(value, 1)
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"a fair weight is a whole number >= 1, got {w!r} for {value!r}")
        return str(w)

    def spec(self, queue_limited: str | None, args: tuple[Any, ...], kw: dict[str, Any]) -> str:
        """The group spec of one call (``<gid>\\t<quota>\\t<limiter>...``).

        Args:
            queue_limited: The queue's limiter family when the job's queue has limits.
        """
        sig, gid, insts = self._sig, [self.task], []
        quota = ""
        if queue_limited is not None:
            insts.append(queue_limited)
        if self._wide is not None:
            insts.append(self._wide)
        for fam, k in self._keyed:
            value = k.read(sig, args, kw)
            gid.append(f"{k.label}={value}")
            insts.append(f"{fam}={value}")
        if self._ordered is not None:
            fam, k = self._ordered
            value = k.read(sig, args, kw)
            gid.append(f"~{k.label}={value}")
            insts.append(f"{fam}={value}")
        if self._fair is not None:
            value = self._fair.read(sig, args, kw)
            gid.append(f"^{self._fair.label}={value}")
            quota = self._weight(value)
        return "\t".join(["|".join(gid), quota, *insts])


def queue_spec(task: str, family: str) -> str:
    """The group spec of a job of a task without a grouping, in a queue with limits."""
    return f"{task}\t\t{family}"
