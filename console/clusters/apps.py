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

    def ready(self) -> None:
        """Serve inference's reads of keys and clusters (`inference.hooks.Directory`)."""
        from console.clusters.directory import ClusterDirectory, connect_invalidation  # needs the registry
        from inference import hooks

        hooks.register_directory(ClusterDirectory())
        connect_invalidation()
