from collections.abc import Sequence

from django import forms

from churnsite.forms import AriaLabelledForm, RenderedOnceCheckbox, RenderedOnceSelect, RenderedOnceTextInput
from ml.models import Bucket
from retention.models import Intervention, Partner, RoiAssumptions


class PartnerFilterForm(AriaLabelledForm):
    q = forms.CharField(required=False, label="Search", max_length=100, widget=RenderedOnceTextInput)
    tier = forms.ChoiceField(required=False, choices=[("", "All tiers"), *Partner.Tier.choices])
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Partner.Status.choices])


def _member_choices(members, empty: str) -> list[tuple[str, str]]:
    return [("", empty)] + [(str(u.pk), u.get_full_name() or u.username) for u in members]


class FeedFilterForm(AriaLabelledForm):
    SORTS = [
        ("urgency", "Urgency"),
        ("risk", "Risk"),
        ("revenue", "Revenue at risk"),
        ("change", "Biggest rise"),
    ]
    CHANGES = [("", "Any change"), ("new", "New at risk"), ("worse", "Worse")]

    q = forms.CharField(required=False, label="Search", max_length=100, widget=RenderedOnceTextInput)
    sort = forms.ChoiceField(required=False, choices=SORTS, label="Sort by", widget=RenderedOnceSelect)
    tier = forms.ChoiceField(
        required=False, choices=[("", "All tiers"), *Partner.Tier.choices], widget=RenderedOnceSelect
    )
    bucket = forms.ChoiceField(
        required=False,
        choices=[("", "Any urgency"), *Bucket.choices],
        label="Urgency",
        widget=RenderedOnceSelect,
    )
    # A plain ChoiceField filled from one query: a ModelChoiceField would query again to clean.
    owner = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, widget=RenderedOnceSelect)
    not_contacted = forms.BooleanField(required=False, label="Not yet contacted", widget=RenderedOnceCheckbox)
    change = forms.ChoiceField(
        required=False, choices=CHANGES, label="Since the last run", widget=RenderedOnceSelect
    )

    def __init__(self, *args, member_choices: Sequence[tuple[int, str]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        owner = self.fields["owner"]
        assert isinstance(owner, forms.TypedChoiceField)
        owner.choices = [("", "Any owner")] + [(str(pk), name) for pk, name in member_choices]
        self.fields["q"].widget.attrs.update(placeholder="Partner id or name", type="search")

    def selector_kwargs(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {
            "sort": data.get("sort") or "urgency",
            "tier": data.get("tier", ""),
            "bucket": data.get("bucket", ""),
            "owner": data.get("owner"),
            "not_contacted": bool(data.get("not_contacted")),
            "search": data.get("q", ""),
            "change": data.get("change", ""),
        }


MANUAL_ACTIONS = [c for c in Intervention.Action.choices if c[0] != Intervention.Action.HOLDOUT]


class InterventionForm(forms.Form):
    action = forms.ChoiceField(choices=MANUAL_ACTIONS)
    assigned_to = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Assign to")
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=4000)
    email_subject = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    email_body = forms.CharField(required=False, widget=forms.HiddenInput, max_length=20000)
    writer = forms.ChoiceField(required=False, choices=Intervention.Writer.choices, widget=forms.HiddenInput)

    def __init__(self, *args, members=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.members = {u.pk: u for u in members}
        self.fields["assigned_to"].choices = _member_choices(members, "Nobody")

    def clean_assigned_to(self):
        pk = self.cleaned_data.get("assigned_to")
        if pk is None:
            return None
        if pk not in self.members:
            raise forms.ValidationError("Choose a member of the retention team")
        return self.members[pk]


class DraftEmailForm(forms.Form):
    """The editable draft: sent and logged as one "email sent" intervention."""

    subject = forms.CharField(max_length=200)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 12}), max_length=20000)
    writer = forms.ChoiceField(choices=Intervention.Writer.choices, widget=forms.HiddenInput)
    original_body = forms.CharField(required=False, widget=forms.HiddenInput, max_length=20000)
    send = forms.BooleanField(required=False, initial=True, label="Send it to the partner's contact now")


class InterventionFilterForm(AriaLabelledForm):
    q = forms.CharField(required=False, label="Search", max_length=100, widget=RenderedOnceTextInput)
    action = forms.ChoiceField(required=False, choices=[("", "Any action"), *Intervention.Action.choices])
    source = forms.ChoiceField(required=False, choices=[("", "Any source"), *Intervention.Source.choices])
    outcome = forms.ChoiceField(required=False, choices=[("", "Any status"), *Intervention.Outcome.choices])
    tier = forms.ChoiceField(required=False, choices=[("", "All tiers"), *Partner.Tier.choices])
    assigned_to = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Assigned to")

    def __init__(self, *args, members=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assigned_to"].choices = _member_choices(members, "Anyone")
        self.fields["q"].widget.attrs.update(placeholder="Partner id or name", type="search")

    def selector_kwargs(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {
            "action": data.get("action", ""),
            "source": data.get("source", ""),
            "outcome": data.get("outcome", ""),
            "tier": data.get("tier", ""),
            "assigned_to": data.get("assigned_to"),
            "search": data.get("q", ""),
        }


class OutcomeForm(forms.Form):
    outcome = forms.ChoiceField(choices=Intervention.Outcome.choices)
    # Required by the outcome service for a correction of a resolved outcome only.
    reason = forms.CharField(required=False, max_length=300, strip=True)


class OutcomeUndoForm(forms.Form):
    event = forms.IntegerField(min_value=1, max_value=2**63 - 1)


class RoiAssumptionsForm(forms.ModelForm):
    class Meta:
        model = RoiAssumptions
        fields = [
            "months_of_revenue_saved",
            "assumed_save_rate",
            "cost_email_sent",
            "cost_call_scheduled",
            "cost_meeting",
            "cost_discount_offered",
            "cost_other",
        ]
        labels = {
            "cost_email_sent": "Cost per email",
            "cost_call_scheduled": "Cost per call",
            "cost_meeting": "Cost per meeting",
            "cost_discount_offered": "Cost per discount",
            "cost_other": "Cost per other action",
        }

    def clean_months_of_revenue_saved(self):
        # A saved partner's revenue counts for a bounded horizon: 0 months makes every ROI
        # -100%, and 100,000 months made it 702070.97x.
        months = self.cleaned_data["months_of_revenue_saved"]
        if not 1 <= months <= 36:
            raise forms.ValidationError("Between 1 and 36 months of revenue")
        return months

    def clean_assumed_save_rate(self):
        rate = self.cleaned_data["assumed_save_rate"]
        if not 0 <= rate <= 1:
            raise forms.ValidationError("A save rate between 0 and 1 (0.3 = 30%)")
        return rate

    def clean(self):
        data = super().clean()
        for name, value in list(data.items()):
            if name.startswith("cost_") and value is not None and value < 0:
                self.add_error(name, "A cost cannot be negative")
        return data


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data]
        return [super(MultipleFileField, self).clean(f, initial) for f in files]


class ImportForm(forms.Form):
    # The form's metaclass moves declared fields into base_fields, so this does not shadow
    # BaseForm.files (the uploads) at run time; the stubs cannot see that. The field keeps the
    # name the page and its tests post.
    files = MultipleFileField(  # type: ignore[assignment]
        label="CSV files", help_text="partners, monthly activity, invoices, churn events (.csv or .csv.gz)"
    )
    dry_run = forms.BooleanField(required=False, label="Check only (write nothing)")
    replace = forms.BooleanField(
        required=False,
        label="The files hold these partners' whole history (delete months and invoices not in them)",
    )
