from __future__ import annotations

from django.db import models


class Report(models.Model):
    """What the ``reports.build`` task computes and saves, from the worker."""

    title = models.CharField(max_length=200)
    words = models.IntegerField()
    top = models.JSONField(default=list)
    job_id = models.CharField(max_length=128, unique=True)
    created = models.DateTimeField(auto_now_add=True)
