import datetime as dt

import pytest

TODAY = dt.date(2026, 6, 20)


@pytest.fixture(scope="session")
def small_world():
    """A small simulated world (1,500 partners x 18 months), the same every run."""
    from ml.sim.simulator import generate_world

    return generate_world(1500, months=18, seed=7, today=TODAY)


@pytest.fixture(scope="session")
def trained(small_world):
    """(model, report) trained once on the small world's frames, with the oracle."""
    from threadpoolctl import threadpool_limits

    from ml.sim.simulator import true_churn_probability
    from ml.training import train_and_evaluate

    w = small_world
    with threadpool_limits(limits=1):
        return train_and_evaluate(
            w.partners,
            w.activity,
            w.invoices,
            today=w.today,
            oracle=lambda c, h: true_churn_probability(w, c, h),
        )


def load_world(world) -> None:
    """Write a World's observable tables with bulk_create (the tests' own minimal loader)."""
    from retention.models import Invoice, MonthlyActivity, Partner

    def day(v):
        return None if v is None or v != v else v.date()

    partners = [
        Partner(
            external_id=r.external_id, name=r.name, tier=r.tier, region=r.region, segment=r.segment,
            monthly_revenue=round(r.monthly_revenue, 2), contact_email=r.contact_email,
            joined_on=r.joined_on.date(), status=r.status, churned_on=day(r.churned_on), notes=r.notes,
        )
        for r in world.partners.itertuples()
    ]  # fmt: skip
    Partner.objects.bulk_create(partners, batch_size=2000)
    ids = dict(Partner.objects.values_list("external_id", "pk"))
    MonthlyActivity.objects.bulk_create(
        [
            MonthlyActivity(
                partner_id=ids[r.external_id], month=r.month.date(), transactions=r.transactions,
                revenue=round(r.revenue, 2), active_users=r.active_users, support_tickets=r.support_tickets,
            )
            for r in world.activity.itertuples()
        ],
        batch_size=5000,
    )  # fmt: skip
    Invoice.objects.bulk_create(
        [
            Invoice(
                partner_id=ids[r.external_id], issued_on=r.issued_on.date(), due_on=r.due_on.date(),
                paid_on=day(r.paid_on), amount=round(r.amount, 2),
            )
            for r in world.invoices.itertuples()
        ],
        batch_size=5000,
    )  # fmt: skip
