"""The simulation clock: the world moves on, interventions work by the simulator's true
effect, and the Outcomes page measures that effect."""

import copy
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from ml.sim import simulator, store
from retention.models import Intervention, Invoice, MonthlyActivity, Partner
from retention.roi import control_group_uplift
from tests.conftest import last_json

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def run(capsys, *args) -> dict:
    call_command(*args)
    return last_json(capsys.readouterr().out)


def test_it_refuses_without_a_simulated_world(media):
    with pytest.raises(CommandError, match="seed_demo"):
        call_command("simulate_days", "30")


def test_the_world_moves_forward_and_churn_lands_in_the_tables(capsys, media):
    seeded = run(
        capsys,
        "seed_demo",
        "--partners",
        "400",
        "--months",
        "6",
        "--seed",
        "4",
        "--today",
        "2026-04-14",
        "--no-progress",
    )
    months_before = MonthlyActivity.objects.count()

    summary = run(capsys, "simulate_days", "62")

    record = store.world_current()
    assert summary["simulated_today"] == record.today.isoformat()
    assert (record.today - record.started_on).days == 62
    assert summary["activity"] > 0 and MonthlyActivity.objects.count() == months_before + summary["activity"]
    assert Partner.objects.filter(status="churned").count() == seeded["churned"] + summary["churned"]
    # The database and the reloaded hidden state agree on who is gone.
    _, world = store.world_load()
    truth = set(world.partners.loc[world.partners["status"] == "churned", "external_id"])
    assert truth == set(Partner.objects.filter(status="churned").values_list("external_id", flat=True))
    # ... and on which invoices are still unpaid (payments during the advance landed).
    assert summary["payments"] > 0
    unpaid_truth = world.invoices[world.invoices["paid_on"].isna()]
    unpaid_db = Invoice.objects.filter(paid_on__isnull=True)
    assert unpaid_db.count() == len(unpaid_truth)


def test_the_outcomes_page_uplift_interval_contains_the_true_effect(capsys, media, manager_client):
    # A fixed simulated today: the world (and so this experiment) is the same on any run date.
    # A 95% interval misses the truth for about 1 world in 70 (measured over 730 dates), so
    # a floating date made this test fail on some days.
    run(
        capsys,
        "seed_demo",
        "--partners",
        "5000",
        "--months",
        "12",
        "--seed",
        "11",
        "--today",
        "2026-04-14",
        "--no-progress",
    )
    _, world = store.world_load()
    # The experiment runs on the partners most at risk (where the agent acts), split at random.
    truth_p = simulator.true_churn_probability(world, world.today)
    at_risk = truth_p.sort_values(ascending=False).index[:1600].tolist()
    rng = np.random.default_rng(2026)
    holdout = set(rng.choice(at_risk, size=len(at_risk) // 2, replace=False).tolist())
    treated = [e for e in at_risk if e not in holdout]
    partners = Partner.objects.in_bulk(at_risk, field_name="external_id")
    Intervention.objects.bulk_create(
        Intervention(
            partner=partners[ext],
            source="agent",
            action="holdout" if ext in holdout else "email_sent",
            writer="" if ext in holdout else "template",
        )
        for ext in at_risk
    )

    # The truth, by counterfactual: the same world with everybody contacted and with nobody.
    contact_day = world.today + timedelta(days=1)
    everybody, nobody = copy.deepcopy(world), copy.deepcopy(world)
    simulator.advance_world(everybody, 95, contacted=dict.fromkeys(at_risk, contact_day))
    simulator.advance_world(nobody, 95)

    def churned(w, ids):
        status = w.partners.set_index("external_id").loc[ids, "status"]
        return (status == "churned").to_numpy()

    true_effect = churned(nobody, at_risk).mean() - churned(everybody, at_risk).mean()

    summary = run(capsys, "simulate_days", "95")
    assert summary["contacts_applied"] == len(treated)
    assert summary["resolved_saved"] + summary["resolved_churned"] == len(at_risk)

    # Control partners were left alone; treated ones got exactly the contacted future.
    db_churned = set(Partner.objects.filter(status="churned").values_list("external_id", flat=True))
    control = sorted(holdout)
    assert [e in db_churned for e in control] == churned(nobody, control).tolist()
    assert [e in db_churned for e in treated] == churned(everybody, treated).tolist()

    # Outcomes are dated in the simulated world: the churn day, or the end of the horizon.
    saved = Intervention.objects.filter(outcome="saved").first()
    assert saved.outcome_set_at.date() == contact_day + timedelta(days=90)
    gone = Intervention.objects.filter(outcome="churned").select_related("partner").first()
    assert gone.outcome_set_at.date() == gone.partner.churned_on >= contact_day

    uplift = control_group_uplift()
    assert uplift["treated_n"] == len(treated) and uplift["control_n"] == len(holdout)
    assert uplift["ci_low"] <= true_effect <= uplift["ci_high"], (uplift, true_effect)
    assert true_effect > 0.03, "the experiment should have a real effect to find"
    print(
        f"true effect {true_effect:.4f}; measured {uplift['uplift']:.4f} [{uplift['ci_low']:.4f}, {uplift['ci_high']:.4f}]"
    )

    page = manager_client.get("/outcomes/").content.decode()
    assert f"{uplift['uplift'] * 100:.1f}" in page


def test_it_says_when_the_feed_scores_are_older_than_the_new_simulated_today(capsys, media):
    from tests.factories import ScoringRunFactory

    run(
        capsys,
        "seed_demo",
        "--partners",
        "50",
        "--months",
        "6",
        "--seed",
        "4",
        "--today",
        "2026-04-14",
        "--no-progress",
    )
    ScoringRunFactory(as_of=store.world_current().today)

    call_command("simulate_days", "7")
    out = capsys.readouterr().out

    assert "still shows scores as of 2026-04-14: run score_partners" in out
    assert last_json(out)["simulated_today"] == "2026-04-21"
