"""App config of the HTML console (views, templates tags and static files)."""

from django.apps import AppConfig


class WebConfig(AppConfig):
    """The HTML console at `/console/`: reads through selectors, writes through services."""

    name = "console.web"
    label = "console_web"
    verbose_name = "Web console"
