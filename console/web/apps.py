"""App config of the HTML console (views, templates tags and static files)."""

from django.apps import AppConfig


class WebConfig(AppConfig):
    """The HTML console at `/console/`: it reads through the apps' selectors and writes through their services."""

    name = "console.web"
    label = "console_web"
    verbose_name = "Web console"
