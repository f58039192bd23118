"""Logging setup for workers and the CLI: text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

__all__ = ["JsonFormatter", "configure_logging"]

_HANDLER_NAME = "asyncq-handler"

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# Set by ``asyncq.tracing.instrument``: the current span's (trace id, span id), or None outside
# one. None until tracing is on, so a formatter without tracing never looks for a span.
trace_ids: Callable[[], tuple[str, str] | None] | None = None


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object: ts, level, logger, message, extras.

    Job events carry ``event``, ``job_id``, ``task``, ``queue``, ``attempt``, ``duration_ms``
    and ``error`` (null where they do not apply) and, on failures, ``reason`` and
    ``traceback``. With tracing on, a line logged inside a span adds ``trace_id`` and
    ``span_id``. See docs/logging.md for the table.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if trace_ids is not None:
            ids = trace_ids()
            if ids is not None:
                out["trace_id"], out["span_id"] = ids
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send the ``asyncq`` and ``asyncio`` loggers to stderr; calling again replaces, never
    duplicates.

    Args:
        level: A logging level name (debug, info, warning, error).
        fmt: ``text`` or ``json``.

    Raises:
        ValueError: Unknown level or format.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (use text or json)")
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    # asyncio's own reports (a task exception never retrieved, a slow callback) go through the
    # same handler, so a JSON log stays one JSON object per line.
    for name, threshold in (("asyncq", numeric), ("asyncio", max(numeric, logging.WARNING))):
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(h)
        logger.addHandler(handler)
        logger.setLevel(threshold)
        logger.propagate = False
