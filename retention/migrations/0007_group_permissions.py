from django.db import migrations

from churnsite.access import apply_group_permissions


class Migration(migrations.Migration):
    """The roles' permissions (churnsite/access.py GROUP_PERMISSIONS), set exactly: this took
    agent.change_agentconfig, delete_donotcontact and friends away from the Retention group."""

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("retention", "0006_importjob"),
        ("agent", "0005_config_labels"),
        ("crm_sim", "0001_initial"),
        ("ml", "0004_scoringrun_as_of_backfill"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="partner",
            options={
                "ordering": ["external_id"],
                "permissions": [("import_data", "Can import partner data")],
            },
        ),
        migrations.RunPython(apply_group_permissions, migrations.RunPython.noop),
    ]
