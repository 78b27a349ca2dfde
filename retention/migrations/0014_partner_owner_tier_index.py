# The Live Feed's owner and tier filters together ("my platinum partners") read one index range
# instead of intersecting the owner's and the tier's bitmaps (issue 15: 13.4 -> 6.4 ms at 1M).

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("retention", "0013_partner_owner_index_covered"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="partner",
            index=models.Index(
                fields=["account_owner", "tier", "status", "id"], name="partner_owner_tier_idx"
            ),
        ),
    ]
