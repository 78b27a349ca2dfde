from django.urls import path

from crm_sim import views

app_name = "crm_sim"
urlpatterns = [
    path("", views.task_list, name="task_list"),
    path("tasks/<str:external_id>/complete/", views.task_complete, name="task_complete"),
]
