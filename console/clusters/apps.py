"""App config of the cluster domain: clusters, API keys, roles, the inference toggle and its restart jobs."""

from django.apps import AppConfig


class ClustersConfig(AppConfig):
    """Clusters and their inference toggle.

    The label stays `console` (the app's name before the split) so existing databases keep their tables
    and migration history.
    """

    name = "console.clusters"
    label = "console"
    verbose_name = "Clusters"
