# Open tasks by due date, ties by id (the CRM page's and the desk's "Today" order): the desk's
# first ten tasks due are the index's first entries instead of a sort of every task due on the
# earliest day (bench/feed_bench.py at 100k: 595 -> 36 buffers). Built before the old one goes.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("crm_sim", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="crmtask",
            index=models.Index(fields=["status", "due_on", "id"], name="crmtask_status_due_id_idx"),
        ),
        migrations.RemoveIndex(
            model_name="crmtask",
            name="crmtask_status_due_idx",
        ),
    ]
