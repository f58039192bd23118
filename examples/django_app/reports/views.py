"""Views that enqueue and wait from synchronous Django code.

``enqueue_sync`` and ``result_sync`` block the calling thread only, need no event loop and
work the same under WSGI (gunicorn) and ASGI (uvicorn, where Django runs sync views in a
thread). The status view is ``async def`` to show the other style: it awaits asyncq directly.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_POST

import asyncq

from .models import Report
from .tasks import app, build_report

#: Longest a request may wait for a result; a waiting sync view holds a thread.
MAX_WAIT = 30.0


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@require_POST
def create_report(request: HttpRequest) -> HttpResponse:
    try:
        body = json.loads(request.body)
        title, text = body["title"], body["text"]
    except (ValueError, KeyError, TypeError):
        return _error(400, 'expected JSON {"title": ..., "text": ...}')
    if not (isinstance(title, str) and isinstance(text, str) and title and text):
        return _error(400, "title and text must be non-empty strings")
    job = build_report.enqueue_sync(title[:200], text)
    return JsonResponse({"id": job.id, "queue": job.queue}, status=202)


@require_GET
def job_result(request: HttpRequest, job_id: str) -> HttpResponse:
    try:
        timeout = min(float(request.GET.get("timeout", "10")), MAX_WAIT)
    except ValueError:
        return _error(400, "timeout must be a number of seconds")
    try:
        result = app.job(job_id).result_sync(timeout=timeout)
    except asyncq.ResultTimeout:
        return _error(504, f"job {job_id} not finished after {timeout:g}s")
    except asyncq.JobNotFound:
        return _error(404, f"no job {job_id}")
    except asyncq.JobFailed as exc:
        return JsonResponse({"id": job_id, "state": "dead", "error": str(exc)})
    except asyncq.JobCancelled:
        return JsonResponse({"id": job_id, "state": "cancelled"})
    return JsonResponse({"id": job_id, "state": "succeeded", "result": result})


@require_GET
async def job_status(request: HttpRequest, job_id: str) -> HttpResponse:
    info = await app.job(job_id).info()
    if info is None:
        return _error(404, f"no job {job_id} (never enqueued, or its record expired)")
    out: dict[str, Any] = {"id": info.id, "state": info.state, "attempts": info.attempts}
    out["result"] = info.result if info.state == "succeeded" else None
    out["error"] = info.error
    return JsonResponse(out)


@require_GET
def report_detail(request: HttpRequest, pk: int) -> HttpResponse:
    report = Report.objects.filter(pk=pk).first()
    if report is None:
        return _error(404, f"no report {pk}")
    return JsonResponse(
        {"id": report.pk, "title": report.title, "words": report.words, "top": report.top}
    )
