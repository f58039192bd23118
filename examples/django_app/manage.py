#!/usr/bin/env python
"""Django's command-line utility for the example project (docs/guides/django.md).

Run from anywhere, e.g. from the repository root::

    python examples/django_app/manage.py migrate
    python examples/django_app/manage.py asyncq_worker
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    # The project's modules are named from the repository root (examples.django_app....), so
    # that root goes on the path whatever directory this is started from.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.project.settings")
    from django.core.management import execute_from_command_line  # noqa: PLC0415

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
