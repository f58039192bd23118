"""The ``asyncq-worker`` settings: the ``--config`` TOML file, queue specs, and their checks.

Every value is checked where it is read, so a typo or a wrong type is one line naming the key,
not a traceback from deep inside the worker or a setting silently ignored.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "CONFIG_KEYS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LOOPS",
    "UsageError",
    "load_config",
    "parse_queues",
    "resolve_queues",
    "suggest",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: ``--loop``: ``auto`` is uvloop where it is installed, else asyncio's own loop.
LOOPS = ("auto", "asyncio", "uvloop")

#: ``{queue: concurrency}``; None stands for "the worker's default concurrency".
QueueSpec = dict[str, int | None]


class UsageError(Exception):
    """A problem with what the user typed; printed as one line."""


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when ``name`` is close to one of ``known``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"


def _queue_entry(name: str, value: object, where: str) -> tuple[str, int | None]:
    if not name or any(c in name for c in "{} ,="):
        raise UsageError(f"bad queue name {name!r} in {where}")
    if value is None:
        return name, None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"bad concurrency {value!r} for queue {name!r} in {where}: need >= 1")
    return name, value


def parse_queues(spec: str) -> QueueSpec:
    """Parse ``emails=20,default`` (a bare name takes the worker's default concurrency).

    Args:
        spec: The spec.

    Returns:
        ``{queue: concurrency or None}``.

    Raises:
        UsageError: The spec is malformed.
    """
    queues: QueueSpec = {}
    for part in spec.split(","):
        name, sep, num = part.strip().partition("=")
        if not name or any(c in name for c in "{} "):
            raise UsageError(f"bad queue spec {part!r}: expected name or name=concurrency")
        try:
            n = int(num) if sep else None
        except ValueError:
            raise UsageError(f"bad queue spec {part!r}: {num!r} is not a number") from None
        if n is not None and n < 1:
            raise UsageError(f"bad queue spec {part!r}: concurrency must be >= 1")
        queues[name] = n
    return queues


def resolve_queues(spec: QueueSpec | None, default: int) -> dict[str, int] | None:
    """Fill in the default concurrency for bare queue names."""
    if not spec:
        return None
    return {name: default if n is None else n for name, n in spec.items()}


# ---- values of the config file ----------------------------------------------------------------


def _text(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _positive_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{key} must be an integer >= 1, got {value!r}")
    return value


def _seconds(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UsageError(f"{key} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{key} must be true or false, got {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[str, object], str]:
    def check(key: str, value: object) -> str:
        if value not in options:
            raise UsageError(f"{key} must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    return check


def _queues(key: str, value: object) -> QueueSpec:
    """A ``"a=10,b"`` string, a ``{ a = 10, b = 2 }`` table, or a list of names."""
    if isinstance(value, str):
        return parse_queues(value)
    if isinstance(value, dict):
        return dict(_queue_entry(str(k), v, key) for k, v in value.items())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return dict(_queue_entry(v, None, key) for v in value)
    raise UsageError(
        f'{key} must be a string ("a=10,b=2"), a table ({{ a = 10, b = 2 }}) or a list of '
        f"names, got {value!r}"
    )


def _port(key: str, value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise UsageError(f"{key} must be a TCP port (0 to 65535), got {value!r}")
    return value


#: Every key of the ``[worker]`` table and the check its value must pass.
CONFIG_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "app": _text,
    "url": _text,
    "queues": _queues,
    "concurrency": _positive_int,
    "threads": _positive_int,
    "processes": _positive_int,
    "grace": _seconds,
    "prefetch": _flag,
    "scheduler": _flag,
    "loop": _choice(LOOPS),
    "log_level": _choice(LOG_LEVELS),
    "log_format": _choice(LOG_FORMATS),
    "wait_for_redis": _seconds,
    "metrics_port": _port,
    "metrics_host": _text,
}


def check_settings(section: dict[str, Any]) -> dict[str, Any]:
    """Check every key and value; return the values in their normalized form.

    Raises:
        UsageError: An unknown key or a bad value (the message names the key).
    """
    out: dict[str, Any] = {}
    for key, value in section.items():
        check = CONFIG_KEYS.get(key)
        if check is None:
            raise UsageError(
                f"unknown key {key!r}{suggest(key, CONFIG_KEYS)}; "
                f"known keys: {', '.join(CONFIG_KEYS)}"
            )
        out[key] = check(key, value)
    return out


def _read_toml(path: str) -> dict[str, Any]:
    if sys.version_info < (3, 11):
        raise UsageError("--config needs Python 3.11+ (tomllib)")
    tomllib: Any = importlib.import_module("tomllib")
    try:
        with open(path, "rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config {path!r}: {exc}") from exc
    return data


def load_config(path: str | None) -> dict[str, Any]:
    """Read and check the ``[worker]`` table of a TOML file (or its top level if it has none).

    Args:
        path: The file, or None for no file.

    Returns:
        The settings by key, values checked and normalized (``queues`` as ``{name: n | None}``).

    Raises:
        UsageError: The file is missing or invalid, has an unknown key or a bad value.
    """
    if path is None:
        return {}
    data = _read_toml(path)
    section = data.get("worker", data)
    if not isinstance(section, dict):
        raise UsageError(f"config {path!r}: 'worker' must be a table, got {section!r}")
    try:
        return check_settings(section)
    except UsageError as exc:
        raise UsageError(f"config {path!r}: {exc}") from None
