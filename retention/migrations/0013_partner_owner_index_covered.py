# The account owner's index gains the partner id, so an owner's partners are read as ids from the
# index alone: the desk strip's tasks due and drafts waiting for an owner (bench/feed_bench.py at
# 100k: 5,075 -> 212 buffers). It replaces the foreign key's own index, which it leads with; it is
# built before that one is dropped.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("retention", "0012_intervention_log_newest_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="partner",
            index=models.Index(fields=["account_owner", "id"], name="partner_owner_idx"),
        ),
        migrations.AlterField(
            model_name="partner",
            name="account_owner",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="owned_partners",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
