from django.apps import AppConfig


class RetentionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "retention"
    verbose_name = "Retention"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from churnsite.access import sync_group_permissions

        post_migrate.connect(sync_group_permissions, dispatch_uid="retention_sync_group_permissions")
