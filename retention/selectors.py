"""Reads for partners and interventions."""

from django.db.models import Q, QuerySet

from retention.models import Partner


def partner_list(*, search: str = "", tier: str = "", status: str = "") -> QuerySet[Partner]:
    qs = Partner.objects.select_related("account_owner")
    if search:
        qs = qs.filter(Q(external_id__iexact=search) | Q(name__icontains=search))
    if tier:
        qs = qs.filter(tier=tier)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("external_id")
