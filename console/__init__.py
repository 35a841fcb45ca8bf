"""Django project: settings, URLs, the Celery app, clusters and the HTML console."""

from .celery import app as celery_app

__all__ = ("celery_app",)
