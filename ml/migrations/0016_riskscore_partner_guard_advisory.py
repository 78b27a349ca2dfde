"""A chunk of score history guards its partners with one shared advisory lock instead of a
key-share lock on each of them (issue 15): locking 10,000 partner rows wrote each row's lock
into its tuple, ~35 ms of a chunk at 1M partners, a third of the history's insert. The delete
trigger of 0014 now takes the guard exclusively before it looks for history, so a delete
waits for the chunks writing at that moment and then sees their rows (a fresh snapshot per
statement in READ COMMITTED), and a chunk that starts during a delete waits for it, then
counts the partner gone (ml.score_store)."""

from django.db import migrations

# ml.score_store.HISTORY_GUARD
GUARD = 0x1A7E_0016

GUARDED = f"""
CREATE OR REPLACE FUNCTION ml_riskscore_partner_restrict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({GUARD});
    IF EXISTS (SELECT 1 FROM ml_riskscore WHERE partner_id = OLD.id) THEN
        RAISE EXCEPTION 'partner % still has score history (ml_riskscore)', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END $$;
"""
UNGUARDED = """
CREATE OR REPLACE FUNCTION ml_riskscore_partner_restrict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ml_riskscore WHERE partner_id = OLD.id) THEN
        RAISE EXCEPTION 'partner % still has score history (ml_riskscore)', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END $$;
"""


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: RAISE has its own %

    return run


class Migration(migrations.Migration):
    dependencies = [("ml", "0015_partnerscore_change_index_tiebreak_by_partner")]

    operations = [migrations.RunPython(_on_postgresql(GUARDED), _on_postgresql(UNGUARDED))]
