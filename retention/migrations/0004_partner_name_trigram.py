"""Live Feed search by partner name (`name__icontains`, i.e. UPPER(name) LIKE '%...%'):
a trigram index turns a scan of every partner into an index lookup at 100k partners.
PostgreSQL only (pg_trgm); other databases keep the plain scan."""

from django.db import migrations

INDEX_SQL = (
    "CREATE INDEX IF NOT EXISTS partner_name_trgm_idx ON retention_partner "
    "USING gin ((UPPER(name::text)) gin_trgm_ops)"
)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(INDEX_SQL)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS partner_name_trgm_idx")


class Migration(migrations.Migration):
    dependencies = [("retention", "0003_roiassumptions")]

    operations = [migrations.RunPython(forwards, backwards)]
