# The Live Feed's sort by change ends with the partner, so the index does too: with every change
# equal (NULL after a first run) PostgreSQL otherwise sorted all current scores (issue 15).
# PostgreSQL only, as in 0006: SQLite (the embedded demo) cannot index DESC NULLS LAST and
# never built the old one; the state changes everywhere so makemigrations stays clean.
from django.db import migrations, models


class PostgresOnly:
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class PostgresOnlyRemoveIndex(PostgresOnly, migrations.RemoveIndex):
    pass


class PostgresOnlyAddIndex(PostgresOnly, migrations.AddIndex):
    pass


class Migration(migrations.Migration):
    dependencies = [
        ("ml", "0014_riskscore_partner_checked_per_chunk"),
    ]

    operations = [
        PostgresOnlyRemoveIndex(
            model_name="partnerscore",
            name="partnerscore_change_idx",
        ),
        PostgresOnlyAddIndex(
            model_name="partnerscore",
            index=models.Index(
                models.OrderBy(models.F("risk_change"), descending=True, nulls_last=True),
                models.F("partner"),
                name="partnerscore_change_idx",
            ),
        ),
    ]
