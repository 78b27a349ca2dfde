from django.apps import AppConfig
from django.core import checks

from agent.checks import check_audit_trail_role


class AgentConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "agent"
    verbose_name = "Intervention agent"

    def ready(self) -> None:
        checks.register(check_audit_trail_role, checks.Tags.security, deploy=True)
