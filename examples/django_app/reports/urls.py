from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("reports/", views.create_report),
    path("reports/<int:pk>/", views.report_detail),
    path("jobs/<str:job_id>/", views.job_status),
    path("jobs/<str:job_id>/result/", views.job_result),
]
