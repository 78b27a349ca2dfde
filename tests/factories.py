import datetime as dt
from decimal import Decimal

import factory
from django.contrib.auth.models import Group, User

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
