from collections.abc import Callable

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from agent.models import AgentConfig
from agent.services import CONFIG_FIELDS
from churnsite.forms import AriaLabelledForm
from churnsite.http import MAX_ID
from retention.models import Partner


class AgentConfigForm(forms.ModelForm):
    approval_tiers = forms.MultipleChoiceField(
        choices=Partner.Tier.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Emails to these tiers wait for a manager's approval",
    )

    class Meta:
        model = AgentConfig
        # Start/Stop has its own button; everything else the service accepts is editable here.
        fields = [f for f in CONFIG_FIELDS if f != "enabled"]
        widgets = {
            "risk_threshold": forms.NumberInput(attrs={"step": "0.01", "min": "0.01", "max": "0.99"}),
            "control_fraction": forms.NumberInput(attrs={"step": "0.01", "min": "0", "max": "0.5"}),
        }

    def clean_risk_threshold(self):
        value = self.cleaned_data["risk_threshold"]
        if not 0 < value < 1:
            raise forms.ValidationError("The threshold is a probability between 0 and 1 (exclusive).")
        return value

    # Whole-number settings with their ranges: one rule for the browser (min/max attributes)
    # and the server, with one message (the model's own "greater than or equal to 0" check
    # used to answer first for negative numbers).
    RANGES = {
        "max_per_hour": (1, 1000, "Between 1 and 1000 contacts an hour."),
        "cooldown_days": (1, 365, "Between 1 and 365 days."),
        "follow_up_days": (1, 90, "Between 1 and 90 days."),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, (low, high, message) in self.RANGES.items():
            field = self.fields[name]
            field.widget.attrs.update(min=low, max=high)
            field.validators = [
                v for v in field.validators if not isinstance(v, (MinValueValidator, MaxValueValidator))
            ] + [MinValueValidator(low, message=message), MaxValueValidator(high, message=message)]

    def clean_control_fraction(self):
        value = self.cleaned_data["control_fraction"]
        if not 0 <= value <= 0.5:
            raise forms.ValidationError("Between 0 and 0.5 (at most half the partners held out).")
        return value


class PartnerRefForm(AriaLabelledForm):
    partner = forms.CharField(
        max_length=16, label="Partner ID", widget=forms.TextInput(attrs={"placeholder": "P10001"})
    )

    def clean_partner(self):
        external_id = self.cleaned_data["partner"].strip().upper()
        try:
            return Partner.objects.get(external_id=external_id)
        except Partner.DoesNotExist:
            raise forms.ValidationError(f"No partner {external_id}.") from None


class DoNotContactForm(PartnerRefForm):
    reason = forms.CharField(max_length=200, required=False)


class ActivityFilterForm(AriaLabelledForm):
    run = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        widget=forms.NumberInput(attrs={"placeholder": "Run #"}),
    )
    type = forms.ChoiceField(required=False, label="Event type")

    def __init__(self, *args, event_types: Callable[[], list[str]] = list, **kwargs):
        super().__init__(*args, **kwargs)
        # A callable: the distinct event types (a scan of the audit trail) are read only when
        # the select is rendered or a type is chosen, not on every poll of the activity log.
        type_field = self.fields["type"]
        assert isinstance(type_field, forms.ChoiceField)
        type_field.choices = lambda: [("", "All events")] + [(t, t) for t in event_types()]


class ReviewForm(forms.Form):
    email_subject = forms.CharField(max_length=200, label="Subject")
    email_body = forms.CharField(widget=forms.Textarea(attrs={"rows": 16, "cols": 90}), label="Body")
    reason = forms.CharField(max_length=500, required=False, label="Reason (required to reject)")
