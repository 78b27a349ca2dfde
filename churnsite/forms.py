"""Form helpers shared by the apps."""

from django import forms
from django.forms.utils import pretty_name


class AriaLabelledForm(forms.Form):
    """Filter bars show no <label> elements (placeholders and "All tiers" options say what
    each control is to sighted users); screen readers get each field's label instead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            if not field.widget.is_hidden:
                field.widget.attrs.setdefault("aria-label", str(field.label or pretty_name(name)))
