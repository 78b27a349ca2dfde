"""History rows (ml_riskscore) drop their database foreign key on the partner (issue 15): PostgreSQL
checked it once per row, a trigger call at insert and a key-share query at commit, 60% of writing
a 10,000-row chunk of history at 1M partners (245 of 400 ms). Each chunk key-share locks its
partners in one statement instead and fails if one is gone (ml.score_store); Django's deletes
still cascade. What the key did on the partner's side stays: on PostgreSQL a trigger refuses to
delete a partner while history rows point at it (Django's cascade deletes them first, in the same
transaction), so a chunk that committed during a delete fails the delete, as the key made it."""

import django.db.models.deletion
from django.db import migrations, models

CREATE = """
CREATE FUNCTION ml_riskscore_partner_restrict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ml_riskscore WHERE partner_id = OLD.id) THEN
        RAISE EXCEPTION 'partner % still has score history (ml_riskscore)', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER ml_riskscore_partner_restrict BEFORE DELETE ON retention_partner
    FOR EACH ROW EXECUTE FUNCTION ml_riskscore_partner_restrict();
"""
DROP = """
DROP TRIGGER IF EXISTS ml_riskscore_partner_restrict ON retention_partner;
DROP FUNCTION IF EXISTS ml_riskscore_partner_restrict();
"""


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: RAISE has its own %

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("ml", "0013_riskscore_run_version_checked_per_chunk"),
        ("retention", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="riskscore",
            name="partner",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="risk_scores",
                to="retention.partner",
            ),
        ),
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP)),
    ]
