from crm_sim.models import CrmTask
from retention.models import Intervention
from tests.factories import PartnerFactory


def test_managers_find_tasks_by_partner_and_filter_by_status(manager_client, make_task):
    make_task(partner=PartnerFactory(external_id="P18477"), title="Call about the overdue invoice")
    make_task(partner=PartnerFactory(external_id="P10342"), title="Quarterly meeting")

    response = manager_client.get("/admin/crm_sim/crmtask/", {"q": "P18477", "status__exact": "open"})

    html = response.content.decode()
    assert response.status_code == 200
    assert "Call about the overdue invoice" in html and "Quarterly meeting" not in html


def test_the_complete_action_goes_through_the_service(manager_client, manager, make_task):
    open_task = make_task(intervention=True)
    make_task(intervention=True)

    response = manager_client.post(
        "/admin/crm_sim/crmtask/",
        {
            "action": "complete_saved",
            "_selected_action": [t.pk for t in CrmTask.objects.all()],
        },
        follow=True,
    )

    assert "Completed 2 tasks as saved" in response.content.decode()
    assert set(Intervention.objects.values_list("outcome", flat=True)) == {"saved"}
    done = CrmTask.objects.get(external_id=open_task.external_id)
    assert done.completed_by == manager
    # A closed task is history: its change page shows it, with nothing to edit.
    page = manager_client.get(f"/admin/crm_sim/crmtask/{done.pk}/change/").content.decode()
    assert done.external_id in page and 'name="title"' not in page


def test_an_admin_edit_goes_through_the_update_service(manager_client, make_task):
    from agent.models import AuditEvent

    task = make_task(title="Call the owner")
    obj = CrmTask.objects.get(external_id=task.external_id)

    response = manager_client.post(
        f"/admin/crm_sim/crmtask/{obj.pk}/change/",
        {"title": "Call the CFO", "notes": "", "due_on": "2026-03-02", "assigned_to": ""},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    obj.refresh_from_db()
    assert (obj.title, str(obj.due_on), obj.status) == ("Call the CFO", "2026-03-02", "open")
    event = AuditEvent.objects.get(event_type="crm_task_updated")
    assert event.payload["to"] == {"title": "Call the CFO", "due_on": "2026-03-02"}
