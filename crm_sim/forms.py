from django import forms

from crm_sim.models import CrmTask
from crm_sim.selectors import VIEWS


class TaskViewForm(forms.Form):
    view = forms.ChoiceField(required=False, choices=list(VIEWS.items()))


class CompleteTaskForm(forms.Form):
    outcome = forms.ChoiceField(choices=CrmTask.Outcome.choices, initial=CrmTask.Outcome.SAVED)
