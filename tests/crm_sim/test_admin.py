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
    assert CrmTask.objects.get(external_id=open_task.external_id).completed_by == manager
