import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from desk.selectors import digest_recipients
from desk.services import digests_send_due


class Command(BaseCommand):
    help = "Send the morning digest now (to every owner of partners, or one user); JSON summary last."

    def add_arguments(self, parser):
        parser.add_argument("--user", help="Only this username")
        parser.add_argument(
            "--again", action="store_true", help="Send even if today's digest already went out"
        )

    def handle(self, *args, **options):
        users = digest_recipients()
        if options["user"]:
            users = users.filter(username=options["user"])
            if not users.exists():
                if not get_user_model().objects.filter(username=options["user"]).exists():
                    raise CommandError(f"No user {options['user']!r}")
                raise CommandError(f"{options['user']!r} owns no active partner or has no email address")
        users = list(users)
        # "Now" whatever the clock says: the local time check is the beat's, not the command's.
        counts = digests_send_due(users=users, force=options["again"], now=None, at_any_time=True)
        self.stdout.write(json.dumps({"recipients": len(users), **counts}))
