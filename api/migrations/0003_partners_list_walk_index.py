"""GET /api/v1/partners walks partners in id order and tests each against its filters (an
urgent bucket's partner ids are a hash: api.reads.partners_list): this index serves that walk
alone, with the tier and status filters, without reading the partner rows, whatever order
they lie in on disk. It replaces partner_list_keys_idx (by primary key), which served the
earlier plan (a bucket's partners looked up one by one: 27,000 buffers a page at 1M).
PostgreSQL only (INCLUDE)."""

from django.db import migrations

CREATE = "CREATE INDEX IF NOT EXISTS partner_list_order_idx ON retention_partner (external_id) INCLUDE (id, tier, status)"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE)
    schema_editor.execute("DROP INDEX IF EXISTS partner_list_keys_idx")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS partner_list_order_idx")
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS partner_list_keys_idx ON retention_partner (id) INCLUDE (external_id, tier, status)"
    )


class Migration(migrations.Migration):
    dependencies = [("api", "0002_partners_list_indexes")]

    operations = [migrations.RunPython(forwards, backwards)]
