from django.apps import AppConfig


class CrmSimConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "crm_sim"
    verbose_name = "CRM (simulated)"
