from django.apps import AppConfig


class RetentionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "retention"
    verbose_name = "Retention"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        # Here, not at module level: churnsite.access imports the models, which import this
        # app config while the registry loads (the apps -> models import cycle Django avoids
        # with ready()).
        from churnsite.access import sync_group_permissions

        post_migrate.connect(sync_group_permissions, dispatch_uid="retention_sync_group_permissions")
