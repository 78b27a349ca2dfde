from django import forms

from churnsite.forms import AriaLabelledForm
from crm_sim.services import SNOOZE_DAYS
from desk.models import DeskPreference


class ScopeForm(forms.Form):
    scope = forms.ChoiceField(choices=DeskPreference.Scope.choices)


class SnoozeForm(forms.Form):
    days = forms.TypedChoiceField(choices=[(str(d), str(d)) for d in SNOOZE_DAYS], coerce=int)


class SavedViewForm(forms.Form):
    name = forms.CharField(max_length=60)
    query = forms.CharField(required=False, max_length=500)
    shared = forms.BooleanField(required=False, label="Share with the team")


class DigestSettingsForm(AriaLabelledForm):
    digest_enabled = forms.BooleanField(required=False, label="Email me the morning digest")
    digest_time = forms.TimeField(
        required=False, label="At (local time)", widget=forms.TimeInput(attrs={"type": "time"})
    )
    digest_timezone = forms.CharField(required=False, max_length=64, label="Time zone")

    def clean_digest_timezone(self):
        import zoneinfo

        name = self.cleaned_data["digest_timezone"].strip()
        if name:
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise forms.ValidationError(
                    "Not a time zone; try Europe/Berlin or America/New_York"
                ) from None
        return name
