from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("", include("examples.django_app.reports.urls"))]
