"""The audit trail becomes a hash chain (agent/audit.py): the chain fields, the chain head
row, verification results, and the existing events backfilled into the chain in the order
they were written (created_at, id)."""

import django.utils.timezone
from django.db import migrations, models

from agent.audit import GENESIS, HASHED_FIELDS, event_hash

BATCH = 2000


def backfill_chain(apps, schema_editor):
    AuditEvent = apps.get_model("agent", "AuditEvent")
    AuditChainHead = apps.get_model("agent", "AuditChainHead")
    postgres = schema_editor.connection.vendor == "postgresql"
    if postgres:
        # The append-only trigger refuses UPDATE; this migration runs as the table's owner, the
        # one role that may set it aside, for the one update history ever gets: joining the chain.
        schema_editor.execute(
            "ALTER TABLE agent_auditevent DISABLE TRIGGER agent_auditevent_no_update_delete"
        )
    seq, prev_hash, batch = 0, GENESIS, []
    for event in AuditEvent.objects.order_by("created_at", "id").iterator(chunk_size=BATCH):
        seq += 1
        event.seq, event.prev_hash = seq, prev_hash
        event.hash = prev_hash = event_hash({name: getattr(event, name) for name in HASHED_FIELDS})
        batch.append(event)
        if len(batch) >= BATCH:
            AuditEvent.objects.bulk_update(batch, ["seq", "prev_hash", "hash"])
            batch = []
    AuditEvent.objects.bulk_update(batch, ["seq", "prev_hash", "hash"])
    if postgres:
        schema_editor.execute("ALTER TABLE agent_auditevent ENABLE TRIGGER agent_auditevent_no_update_delete")
    AuditChainHead.objects.create(pk=1, seq=seq, hash=prev_hash)


class Migration(migrations.Migration):
    dependencies = [
        ("agent", "0005_config_labels"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditChainHead",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("seq", models.PositiveBigIntegerField(default=0)),
                ("hash", models.CharField(max_length=64)),
            ],
        ),
        migrations.CreateModel(
            name="AuditVerification",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("checked_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("ok", models.BooleanField()),
                ("events", models.PositiveBigIntegerField(help_text="Events checked")),
                ("head_seq", models.PositiveBigIntegerField(blank=True, null=True)),
                ("head_hash", models.CharField(blank=True, max_length=64)),
                (
                    "broken_seq",
                    models.PositiveBigIntegerField(blank=True, help_text="First broken link", null=True),
                ),
                ("broken_event_id", models.BigIntegerField(blank=True, null=True)),
                ("reason", models.CharField(blank=True, max_length=300)),
                ("seconds", models.FloatField(default=0)),
            ],
            options={
                "ordering": ["-checked_at", "-id"],
                "get_latest_by": "checked_at",
            },
        ),
        migrations.AddField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="seq",
            field=models.PositiveBigIntegerField(editable=False, null=True, verbose_name="chain position"),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now, editable=False),
        ),
        migrations.RunPython(backfill_chain, migrations.RunPython.noop),
    ]
