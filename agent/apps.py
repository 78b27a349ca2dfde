from django.apps import AppConfig


class AgentConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "agent"
    verbose_name = "Intervention agent"

    def ready(self) -> None:
        from agent import checks  # noqa: F401 - registers the deploy check
