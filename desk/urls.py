from django.urls import path

from desk import views

app_name = "desk"
urlpatterns = [
    path("scope/", views.scope_set, name="scope"),
    path("tasks/<str:external_id>/complete/", views.task_complete, name="task_complete"),
    path("tasks/<str:external_id>/snooze/", views.task_snooze, name="task_snooze"),
    path("digest/", views.digest_preview, name="digest_preview"),
    path("views/", views.saved_view_create, name="saved_view_create"),
    path("views/<id:pk>/", views.saved_view_open, name="saved_view_open"),
    path("views/<id:pk>/delete/", views.saved_view_delete, name="saved_view_delete"),
]
