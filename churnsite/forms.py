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


# Rendered <select>s by everything their HTML depends on; bounded, so odd values cannot grow it.
_SELECT_HTML: dict[tuple, str] = {}
_SELECT_HTML_MAX = 2_000


class RenderedOnceSelect(forms.Select):
    """A <select> whose HTML is rendered once per (name, value, attributes, choices) and then
    reused: Django renders every option through a template, and the Live Feed's five filter
    selects cost 3 ms of CPU on each view (bench/feed_bench.py). The key holds all the
    widget's inputs, so a changed team list or label renders afresh."""

    def render(self, name, value, attrs=None, renderer=None):
        key = (
            name,
            repr(value),
            tuple(sorted((attrs or {}).items())),
            tuple(sorted(self.attrs.items())),
            tuple((str(v), str(label)) for v, label in self.choices),
            id(renderer),
        )
        html = _SELECT_HTML.get(key)
        if html is None:
            html = super().render(name, value, attrs, renderer)
            if len(_SELECT_HTML) < _SELECT_HTML_MAX:
                _SELECT_HTML[key] = html
        return html
