"""GET /api/v1/partners with a filter few partners match (?bucket=7d: 755 of 100k): the page's
ids come from these two indexes alone (a bucket's partner ids, then each partner's id order key
and the tier and status filters), are sorted and cut to a page, and only that page's rows are
read (api.reads.partners_list). Without them PostgreSQL walks the id order and probes each
partner's score: 6,700 partners and 40,000 buffers for one page (18 ms; bench/api_bench.py).
PostgreSQL only (INCLUDE); other databases keep the walk. They live here, with the one query
they serve, not in the models of the tables they index."""

from django.db import migrations

INDEXES = {
    # ?bucket=: a bucket's partner ids without reading the score rows.
    "partnerscore_bucket_partner_idx": "ON ml_partnerscore (bucket, partner_id)",
    # Those ids' order key and the tier and status filters without reading the partner rows.
    "partner_list_keys_idx": "ON retention_partner (id) INCLUDE (external_id, tier, status)",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, target in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} {target}")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0001_initial"),
        ("ml", "0010_riskscore_fk_indexes_covered"),
        ("retention", "0010_partner_updated_at_index"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
