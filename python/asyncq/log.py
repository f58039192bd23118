"""Logging setup for workers and the CLI: text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["JsonFormatter", "configure_logging"]

_HANDLER_NAME = "asyncq-handler"

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object: time, level, logger, message, extras.

    Job events carry ``event``, ``job_id``, ``task``, ``queue``, ``attempt`` and, where they
    apply, ``duration_ms``, ``error``, ``reason`` and ``traceback`` (see docs/logging.md).
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
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
