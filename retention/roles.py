"""Who may do what. Groups come from a data migration; their permissions are synced
after every migrate (permissions only exist once post_migrate has created them)."""

RETENTION_GROUP = "Retention"
MANAGERS_GROUP = "Managers"

# "app_label.codename"; a missing permission (app not migrated yet) is skipped.
RETENTION_PERMISSIONS = [
    "retention.view_partner",
    "retention.view_monthlyactivity",
    "retention.view_invoice",
    "retention.view_intervention",
    "retention.add_intervention",
    "retention.change_intervention",
    "retention.view_roiassumptions",
    "ml.view_modelversion",
    "ml.view_riskscore",
    "agent.view_agentrun",
    "agent.view_auditevent",
    "agent.view_agentconfig",
    "agent.change_agentconfig",
    # SPEC: the retention team runs and configures the agent; only managers approve its drafts.
    "agent.run_agent",
    "agent.view_donotcontact",
    "agent.add_donotcontact",
    "agent.delete_donotcontact",
    "agent.view_followup",
    "crm_sim.view_crmtask",
    "crm_sim.change_crmtask",
]
MANAGER_PERMISSIONS = RETENTION_PERMISSIONS + [
    "retention.approve_intervention",
    "agent.view_interventionreview",
    "retention.correct_outcome",
    "retention.change_roiassumptions",
    "retention.change_partner",
    "ml.change_modelversion",
]


def sync_group_permissions(**kwargs) -> None:
    from django.contrib.auth.models import Group, Permission

    for group_name, perms in (
        (RETENTION_GROUP, RETENTION_PERMISSIONS),
        (MANAGERS_GROUP, MANAGER_PERMISSIONS),
    ):
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        group.permissions.add(*wanted)
