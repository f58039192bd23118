"""One adapter per library. See base.py for the contract; a new peer is one file here."""

NAMES = [
    "asyncq",
    "asyncq_limited",
    "asyncq_metrics",
    "floor",
    "saq",
    "streaq",
    "taskiq",
    "arq",
    "dramatiq",
    "rq",
    "celery",
    "ardiq",
]
