import json

from django.core.management.base import BaseCommand

from churnsite.schedules import periodic_tasks_sync


class Command(BaseCommand):
    help = "Upsert every periodic schedule declared in code into django-celery-beat."

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(periodic_tasks_sync()))
