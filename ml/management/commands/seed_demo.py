"""Fill the database with a simulated partner world and the demo users."""

import json
import time

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from tqdm import tqdm

from churnsite.access import MANAGERS, RETENTION
from ml.management.argtypes import iso_date
from ml.sim import simulator, store
from retention.models import Partner

DEMO_USERS = [
    # username, password, group, first, last, staff
    ("retention", "retention-demo", RETENTION, "Riley", "Reyes", False),
    ("manager", "manager-demo", MANAGERS, "Morgan", "Mills", True),
]
# Account owners of the demo partners (the retention demo user owns a share too).
TEAM = [
    ("alex.kim", "Alex", "Kim"),
    ("sam.patel", "Sam", "Patel"),
    ("jordan.lee", "Jordan", "Lee"),
    ("casey.nguyen", "Casey", "Nguyen"),
    ("taylor.brooks", "Taylor", "Brooks"),
]
# Tables a reset empties, children first (TRUNCATE ... CASCADE on PostgreSQL).
RESET_TABLES = [
    "crm_sim_crmtask",
    "agent_auditevent",
    "agent_auditchainhead",
    "agent_auditverification",
    "retention_intervention",
    "agent_agentrun",
    "ml_riskscore",
    "ml_partnerscore",
    "ml_scoringrun",
    "retention_invoice",
    "retention_monthlyactivity",
    "retention_partner",
    "ml_simulatedworld",
]


class Command(BaseCommand):
    help = "Seed a simulated partner world (partners, activity, invoices) and the demo users."

    def add_arguments(self, parser):
        parser.add_argument("--partners", type=int, required=True, help="number of partners")
        parser.add_argument("--months", type=int, default=24, help="months of history (default 24)")
        parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
        parser.add_argument("--reset", action="store_true", help="erase existing demo data first")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument(
            "--today",
            type=iso_date,
            default=None,
            help="the simulated today, YYYY-MM-DD (default: the real date); the same seed and "
            "date give the same world",
        )

    def handle(self, *args, **opts):
        n, months, seed = opts["partners"], opts["months"], opts["seed"]
        if n < 1:
            raise CommandError("--partners must be at least 1")
        if not 3 <= months <= 120:
            raise CommandError("--months must be between 3 and 120")
        existing = Partner.objects.count()
        if existing and not opts["reset"]:
            raise CommandError(
                f"The database already holds {existing} partners. seed_demo refuses to mix worlds: "
                "run it with --reset to erase the demo data and seed again."
            )
        if existing and not settings.DEBUG:
            # The reset empties the audit trail too: a demo maintenance step, never production's.
            raise CommandError(
                "seed_demo --reset erases every partner and the audit trail: refused when DEBUG is off "
                "(set DEBUG=true for a demo database)."
            )
        started = time.perf_counter()
        if existing:
            self._reset()

        self.stdout.write(f"Simulating {n:,} partners x {months} months (seed {seed})...")
        world = simulator.generate_world(n, months=months, seed=seed, today=opts["today"])
        t_sim = time.perf_counter() - started

        total = len(world.partners) + len(world.activity) + len(world.invoices)
        bar = tqdm(total=total, unit="rows", disable=opts["no_progress"], file=self.stderr._out)
        stages = {"simulate": round(t_sim, 2)}

        def lap(name: str, since: float) -> float:
            now = time.perf_counter()
            stages[name] = round(now - since, 2)
            return now

        with transaction.atomic():
            t = time.perf_counter()
            users = self._users()
            owners = [users[u].pk for u, *_ in TEAM] + [users["retention"].pk]
            with store.bulk_load():
                t = lap("users", t)
                ids = store.write_partners(world.partners, owner_ids=owners, seed=seed, progress=bar.update)
                t = lap("partners", t)
                n_activity = store.write_activity(world.activity, ids=ids, progress=bar.update)
                t = lap("activity", t)
                n_invoices = store.write_invoices(world.invoices, ids=ids, progress=bar.update)
                t = lap("invoices", t)
            t = lap("indexes", t)
            state_path = store.world_state_save(state=world.state)
            record = store.world_record(world=world, seed=seed, months=months, state_path=state_path)
            t = lap("hidden_state", t)
        t = lap("commit", t)
        bar.close()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Fresh statistics, so the first Live Feed query plans well.
                cursor.execute("ANALYZE retention_partner, retention_monthlyactivity, retention_invoice")
            lap("analyze", t)

        churned = int((world.partners["status"] == "churned").sum())
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {n:,} partners ({churned:,} already churned), {n_activity:,} activity rows, "
                f"{n_invoices:,} invoices. Simulated today: {record.today}."
            )
        )
        for username, password, group, *_ in DEMO_USERS:
            self.stdout.write(f"  demo login ({group}): {username} / {password}")
        summary = {
            "partners": n,
            "months": months,
            "seed": seed,
            "churned": churned,
            "activity_rows": n_activity,
            "invoices": n_invoices,
            "rows_written": len(world.partners) + n_activity + n_invoices,
            "simulated_today": record.today.isoformat(),
            "simulate_seconds": round(t_sim, 2),
            "seconds": round(time.perf_counter() - started, 2),
            "stages": stages,
        }
        self.stdout.write(json.dumps(summary))

    def _users(self) -> dict[str, User]:
        users = {}
        for username, password, group, first, last, staff in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.first_name, user.last_name, user.is_staff = first, last, staff
            user.email = f"{username}@churnsite.example"
            user.set_password(password)
            user.save()
            user.groups.add(Group.objects.get(name=group))
            users[username] = user
        retention = Group.objects.get(name=RETENTION)
        for username, first, last in TEAM:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"first_name": first, "last_name": last, "email": f"{username}@churnsite.example"},
            )
            if created:
                user.set_unusable_password()  # team members in the story; they don't log in
                user.save()
            user.groups.add(retention)
            users[username] = user
        return users

    def _reset(self) -> None:
        self.stdout.write("Erasing the existing demo data (--reset)...")
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # The audit trail's trigger lets only its owner (the migrations role) truncate it.
                existing = set(connection.introspection.table_names(cursor))
                tables = [t for t in RESET_TABLES if t in existing]
                cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
            else:
                existing = set(connection.introspection.table_names(cursor))
                for table in RESET_TABLES:
                    if table in existing:
                        cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
