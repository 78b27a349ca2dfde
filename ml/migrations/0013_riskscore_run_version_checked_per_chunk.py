"""History rows (ml_riskscore) drop their database foreign keys on the run and the model version:
every row of a chunk carries the same two, and PostgreSQL checked them once per row at commit
(issue 15). Each chunk key-share locks the run and its version once instead (ml.score_store);
Django's deletes still cascade (run) and protect (version). The partner's key stays."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ml", "0010_riskscore_fk_indexes_covered"),
    ]

    operations = [
        migrations.AlterField(
            model_name="riskscore",
            name="model_version",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="ml.modelversion",
            ),
        ),
        migrations.AlterField(
            model_name="riskscore",
            name="run",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="scores",
                to="ml.scoringrun",
            ),
        ),
    ]
