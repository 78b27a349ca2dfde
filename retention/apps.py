from django.apps import AppConfig


class RetentionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "retention"
    verbose_name = "Retention"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save

        # Here, not at module level: churnsite.access imports the models, which import this
        # app config while the registry loads (the apps -> models import cycle Django avoids
        # with ready()).
        from churnsite.access import sync_group_permissions
        from retention.signals import drop_team_choices

        post_migrate.connect(sync_group_permissions, dispatch_uid="retention_sync_group_permissions")
        user = get_user_model()
        for signal in (post_save, post_delete):
            for sender in (user, Group):
                signal.connect(
                    drop_team_choices, sender=sender, dispatch_uid=f"team_choices_{sender.__name__}"
                )
        m2m_changed.connect(drop_team_choices, sender=user.groups.through, dispatch_uid="team_choices_groups")
