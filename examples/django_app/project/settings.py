"""Settings of the example Django project: asyncq needs two of them, ``ASYNCQ_URL`` (the
broker, read by ``reports/tasks.py``) and ``ASYNCQ_APP`` (what ``manage.py asyncq_worker``
runs). Everything else is as small as Django allows; values come from the environment so the
tests can point the project at a private Redis and a scratch database."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Set DJANGO_SECRET_KEY in any real deployment; this fallback only suits a local run.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "asyncq-example-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

INSTALLED_APPS = ["examples.django_app.reports"]
# No session, auth or CSRF middleware: the example is a JSON API without logins. A project
# with browser forms keeps CsrfViewMiddleware and sends the token with its POSTs.
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "examples.django_app.project.urls"
ASGI_APPLICATION = "examples.django_app.project.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# asyncq: the broker every web process and worker shares, and the App the worker runs.
ASYNCQ_URL = os.environ.get("ASYNCQ_URL", "redis://127.0.0.1:6379/0")
ASYNCQ_APP = "examples.django_app.reports.tasks:app"
