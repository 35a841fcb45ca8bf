"""App config for the console (clusters and the HTML console)."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """Clusters, their inference toggle and the HTML console."""

    name = "console"
