from django.apps import AppConfig


class DeskConfig(AppConfig):
    """The morning desk: my partners, saved views, tasks in the feed, digest email, chat alerts."""

    name = "desk"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # In ready(), not at module level: the receivers import the models, which cannot load
        # while the app registry is importing this config (the apps -> models import cycle).
        from desk.receivers import queue_at_risk_alerts
        from ml.signals import scoring_run_succeeded

        scoring_run_succeeded.connect(queue_at_risk_alerts, dispatch_uid="desk_at_risk_alerts")
