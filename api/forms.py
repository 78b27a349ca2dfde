from django import forms

from api.models import WEBHOOK_EVENTS
from churnsite.forms import AriaLabelledForm


class TokenForm(AriaLabelledForm):
    name = forms.CharField(max_length=100, help_text="What will use it, e.g. 'HubSpot workflow'")


class WebhookForm(AriaLabelledForm):
    url = forms.URLField(max_length=500, label="URL", assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=[(e, e) for e in WEBHOOK_EVENTS], widget=forms.CheckboxSelectMultiple
    )
    secret = forms.CharField(
        min_length=16, max_length=100, help_text="The receiver's HMAC key (at least 16 characters)"
    )
    description = forms.CharField(max_length=200, required=False)
