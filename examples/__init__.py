"""Runnable examples of asyncq. Start with ``make demo`` (runs :mod:`examples.demo`)."""
