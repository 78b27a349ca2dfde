from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The JSON API (/api/v1/), its per-user tokens, and signed webhooks out."""

    name = "api"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # In ready(), not at module level: receivers imports models, which need the app
        # registry this module is part of loading (an import cycle with the registry).
        from api import receivers

        receivers.connect()
