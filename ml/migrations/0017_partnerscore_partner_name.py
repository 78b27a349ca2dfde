"""The partner's name on its current score (issue 15): a Live Feed name search that matches
thousands of partners ("Ember" at 1M: 2,001+) walked the sort's index looking up each
partner's row to test its name, 4,502 lookups and 22,699 buffers for a page of 50. Testing a
copy on the score row reads 2,188. Scoring writes it (ml.score_store); a trigger on the
partners keeps it in step when a partner is renamed, on PostgreSQL and on SQLite."""

from django.db import migrations, models

# ml.score_store.HISTORY_GUARD, as in 0016.
GUARD = 0x1A7E_0016

# Before the rename is written: wait for the scoring chunks writing at that moment (they hold
# the history guard shared until they commit), then update the live copy, and stamp the partner
# as updated now. A chunk that started first may have copied the old name into a dispatched
# run's staged scores; the run's close re-reads the partners updated since the run started
# (ml.score_store.current_stage_swap). A chunk that starts later waits for the rename's commit.
PG_TRIGGER = f"""
CREATE OR REPLACE FUNCTION ml_partnerscore_partner_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({GUARD});
    UPDATE ml_partnerscore SET partner_name = NEW.name WHERE partner_id = NEW.id;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END $$;
CREATE TRIGGER ml_partnerscore_partner_renamed BEFORE UPDATE OF name ON retention_partner
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION ml_partnerscore_partner_renamed();
"""
PG_DROP = """
DROP TRIGGER IF EXISTS ml_partnerscore_partner_renamed ON retention_partner;
DROP FUNCTION IF EXISTS ml_partnerscore_partner_renamed();
"""
SQLITE_TRIGGER = """
CREATE TRIGGER ml_partnerscore_partner_renamed AFTER UPDATE OF name ON retention_partner
    WHEN OLD.name IS NOT NEW.name
BEGIN
    UPDATE ml_partnerscore SET partner_name = NEW.name WHERE partner_id = NEW.id;
END
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS ml_partnerscore_partner_renamed"

BACKFILL = {
    "postgresql": "UPDATE ml_partnerscore s SET partner_name = p.name FROM retention_partner p "
    "WHERE p.id = s.partner_id",
    "sqlite": "UPDATE ml_partnerscore SET partner_name = "
    "(SELECT p.name FROM retention_partner p WHERE p.id = ml_partnerscore.partner_id)",
}


class AddFieldInPlace(migrations.AddField):
    """On SQLite an ALTER TABLE ADD COLUMN instead of Django's table remake: the remake builds
    every index of the model's state, and SQLite cannot build partnerscore_change_idx (DESC NULLS
    LAST, PostgreSQL only: 0015)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "sqlite":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        schema_editor.execute(
            "ALTER TABLE ml_partnerscore ADD COLUMN partner_name varchar(200) NOT NULL DEFAULT ''"
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "sqlite":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        schema_editor.execute("ALTER TABLE ml_partnerscore DROP COLUMN partner_name")


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor in BACKFILL:
        schema_editor.execute(BACKFILL[vendor])
    if vendor == "postgresql":
        schema_editor.execute(PG_TRIGGER, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_TRIGGER)


def backwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_DROP, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_DROP)


class Migration(migrations.Migration):
    # After retention 0013: on SQLite its AlterField remakes retention_partner, which drops the
    # table's triggers, and a fresh `migrate` ran it after this migration.
    dependencies = [
        ("ml", "0016_riskscore_partner_guard_advisory"),
        ("retention", "0013_partner_owner_index_covered"),
    ]

    operations = [
        AddFieldInPlace(
            model_name="partnerscore",
            name="partner_name",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.RunPython(forwards, backwards),
    ]
