"""The asyncq App of the Django project and its tasks.

Imported by the views (to enqueue) and by ``manage.py asyncq_worker`` (to run the jobs), both
with Django set up, so the tasks may use settings and the ORM like any view does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings
from django.db import close_old_connections

import asyncq

from .models import Report

app = asyncq.App(settings.ASYNCQ_URL, default_queue="reports")


@app.task(name="reports.build", retries=2, timeout=60)
def build_report(title: str, text: str) -> dict[str, Any]:
    """Count the words of ``text`` and save a :class:`Report`.

    A plain function: the worker runs it in its thread pool, where the ORM's blocking calls
    belong (in an ``async def`` task they would need ``sync_to_async``). Each worker thread has
    its own database connection, as each request thread has in a WSGI server; closing stale
    ones before and after, as Django does around a request, keeps a long-lived worker from
    using a connection the database dropped.

    Delivery is at-least-once, so the report is keyed by the job id: a second run of the same
    job (its first worker died before acknowledging) updates the row instead of adding one.
    """
    close_old_connections()
    try:
        words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
        counts = Counter(w for w in words if w)
        report, _ = Report.objects.update_or_create(
            job_id=asyncq.current_job().job_id,
            defaults={
                "title": title,
                "words": sum(counts.values()),
                "top": [w for w, _ in counts.most_common(3)],
            },
        )
        return {"report": report.pk, "words": report.words, "top": report.top}
    finally:
        close_old_connections()
