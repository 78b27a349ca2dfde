import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "churnsite.settings")
# One OpenMP thread per process unless the operator says otherwise: a prefork worker already
# runs a process per core, and sklearn's trees would start a thread per core in each of them
# (2 processes x 2 spinning threads on 2 cores predicted 67k partners in 263 s instead of 11 s).
# Set before sklearn loads: OpenMP reads it once; the commands' --threads still override it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

app = Celery("churnsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
