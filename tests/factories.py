import datetime as dt
from decimal import Decimal

import factory
from django.contrib.auth.models import Group, User
from django.utils import timezone

from retention.models import Intervention, Invoice, MonthlyActivity, Partner


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@churnsite.example")
    password = factory.django.Password("correct-horse-battery")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create and extracted:
            for name in extracted:
                self.groups.add(Group.objects.get(name=name))


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner

    external_id = factory.Sequence(lambda n: f"P{10000 + n}")
    name = factory.Faker("company")
    tier = Partner.Tier.SILVER
    region = Partner.Region.NA
    segment = Partner.Segment.RESELLER
    monthly_revenue = Decimal("2500.00")
    contact_email = factory.LazyAttribute(lambda p: f"ops@{p.external_id.lower()}.example")
    joined_on = dt.date(2023, 1, 15)
    status = Partner.Status.ACTIVE


class MonthlyActivityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MonthlyActivity

    partner = factory.SubFactory(PartnerFactory)
    month = dt.date(2026, 1, 1)
    transactions = 120
    revenue = Decimal("2500.00")
    active_users = 8
    support_tickets = 1


class InvoiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invoice

    partner = factory.SubFactory(PartnerFactory)
    issued_on = dt.date(2026, 1, 1)
    due_on = dt.date(2026, 1, 31)
    paid_on = dt.date(2026, 1, 20)
    amount = Decimal("2500.00")


class InterventionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Intervention

    partner = factory.SubFactory(PartnerFactory)
    action = Intervention.Action.EMAIL_SENT
    source = Intervention.Source.MANUAL


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "ml.ModelVersion"

    trained_at = factory.LazyFunction(timezone.now)
    window_start = dt.date(2024, 1, 1)
    window_end = dt.date(2025, 9, 30)
    features = factory.LazyFunction(lambda: ["days_since_last_payment", "trend_velocity"])
    metrics = factory.LazyFunction(dict)
    artifact_path = "models/test.skops"
    artifact_sha256 = "0" * 64
    is_active = False


class ScoringRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "ml.ScoringRun"

    model_version = factory.SubFactory(ModelVersionFactory)
    status = "succeeded"
    started_at = factory.LazyFunction(timezone.now)
    finished_at = factory.LazyFunction(timezone.now)


class PartnerScoreFactory(factory.django.DjangoModelFactory):
    """A current score, with bucket probabilities that sum to one and agree with the risk."""

    class Meta:
        model = "ml.PartnerScore"

    class Params:
        risk_value = 0.9

    partner = factory.SubFactory(PartnerFactory)
    model_version = factory.SubFactory(ModelVersionFactory)
    run = None
    risk = factory.LazyAttribute(lambda o: o.risk_value)
    p_7d = factory.LazyAttribute(lambda o: round(o.risk_value * 0.5, 6))
    p_30d = factory.LazyAttribute(lambda o: round(o.risk_value * 0.3, 6))
    p_90d = factory.LazyAttribute(
        lambda o: round(o.risk_value - round(o.risk_value * 0.5, 6) - round(o.risk_value * 0.3, 6), 6)
    )
    p_later = factory.LazyAttribute(lambda o: round(1 - o.risk_value, 6))
    bucket = factory.LazyAttribute(lambda o: "7d" if o.risk_value >= 0.5 else "later")
    urgency_rank = factory.LazyAttribute(lambda o: 0 if o.risk_value >= 0.5 else 3)
    revenue_at_risk = factory.LazyAttribute(lambda o: o.partner.monthly_revenue * Decimal(str(o.risk_value)))
    partner_name = factory.LazyAttribute(lambda o: o.partner.name)  # as scoring writes it
    scored_at = factory.LazyFunction(timezone.now)
    drivers = factory.LazyFunction(
        lambda: [
            {"feature": "days_overdue", "text": "Payment 45 days overdue", "value": 45, "points": 18.0},
            {
                "feature": "transactions_trend_3m",
                "text": "Transactions down 38% in 3 months",
                "value": -0.38,
                "points": 11.5,
            },
            {
                "feature": "support_tickets_3m",
                "text": "9 support tickets in 3 months",
                "value": 9,
                "points": 4.2,
            },
        ]
    )
