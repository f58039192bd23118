"""``manage.py asyncq_worker [asyncq-worker options]``: a worker with Django set up.

``asyncq-worker`` on its own imports the App's module without setting Django up, and a tasks
module that imports models then fails (``AppRegistryNotReady``). Started by ``manage.py``,
settings are loaded and every app is ready before the worker imports ``settings.ASYNCQ_APP``;
the rest is ``asyncq-worker`` itself: same options, signals, graceful shutdown and exit codes.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from asyncq.cli import worker_main


class Command(BaseCommand):
    help = (
        "Run an asyncq worker for settings.ASYNCQ_APP with Django set up. Options after "
        "'--' go to asyncq-worker, e.g.: manage.py asyncq_worker -- -q reports=20 --grace 60"
    )
    # The worker checks what it needs; Django's system checks run with `manage.py check`.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--app", default=None, help="module:attribute of the App (default ASYNCQ_APP)"
        )
        parser.add_argument("worker_args", nargs=argparse.REMAINDER, help="asyncq-worker options")

    def handle(self, *args: Any, **options: Any) -> None:
        app_path = options["app"] or getattr(settings, "ASYNCQ_APP", None)
        if not app_path:
            raise CommandError("set ASYNCQ_APP in the settings or pass --app module:app")
        extra = [a for a in options["worker_args"] if a != "--"]
        code = worker_main([app_path, *extra])
        if code:
            raise SystemExit(code)
