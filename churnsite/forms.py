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


# Rendered widgets by everything their HTML depends on; bounded, so odd values cannot grow it.
_WIDGET_HTML: dict[tuple, str] = {}
_WIDGET_HTML_MAX = 2_000


class _RenderedOnce(forms.Widget):
    """A widget whose HTML is rendered once per (class, name, value, attributes, choices) and
    then reused: Django renders each widget (and every option of a <select>) through a
    template, and the Live Feed's five filter selects cost 3 ms of CPU on each view, its search
    box and checkbox another 0.5 ms (bench/feed_bench.py). The key holds all the widget's
    inputs, so a changed team list, label or search renders afresh."""

    def render(self, name, value, attrs=None, renderer=None):
        key = (
            type(self),
            name,
            repr(value),
            tuple(sorted((attrs or {}).items())),
            tuple(sorted(self.attrs.items())),
            tuple((str(v), str(label)) for v, label in getattr(self, "choices", ())),
            id(renderer),
        )
        html = _WIDGET_HTML.get(key)
        if html is None:
            html = super().render(name, value, attrs, renderer)
            if len(_WIDGET_HTML) < _WIDGET_HTML_MAX:
                _WIDGET_HTML[key] = html
        return html


class RenderedOnceSelect(_RenderedOnce, forms.Select):
    pass


class RenderedOnceTextInput(_RenderedOnce, forms.TextInput):
    pass


class RenderedOnceCheckbox(_RenderedOnce, forms.CheckboxInput):
    pass
