from django import forms

from retention.models import Partner


class PartnerFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search", max_length=100)
    tier = forms.ChoiceField(required=False, choices=[("", "All tiers"), *Partner.Tier.choices])
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Partner.Status.choices])
