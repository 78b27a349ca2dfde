# The Intervention Log's default page (newest first) read off an index instead of sorting the
# whole history (issue 15: 1 s at 200k interventions).
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("retention", "0011_activity_trailing_windows"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="intervention",
            index=models.Index(fields=["-created_at", "-id"], name="intv_log_newest_idx"),
        ),
    ]
