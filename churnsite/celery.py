import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")

app = Celery("churnsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
