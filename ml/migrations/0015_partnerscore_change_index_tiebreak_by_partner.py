# The Live Feed's sort by change ends with the partner, so the index does too: with every change
# equal (NULL after a first run) PostgreSQL otherwise sorted all current scores (issue 15).
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ml", "0014_riskscore_partner_checked_per_chunk"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="partnerscore",
            name="partnerscore_change_idx",
        ),
        migrations.AddIndex(
            model_name="partnerscore",
            index=models.Index(
                models.OrderBy(models.F("risk_change"), descending=True, nulls_last=True),
                models.F("partner"),
                name="partnerscore_change_idx",
            ),
        ),
    ]
