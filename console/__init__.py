"""The Django project's plumbing (settings, URLs, Celery app, WSGI) and two apps:

- `console.clusters`: the cluster domain (clusters, API keys, roles, the inference toggle, restart jobs);
- `console.web`: the HTML console.
"""

from .celery import app as celery_app

__all__ = ("celery_app",)
