from django.urls import path

from agent import views

app_name = "agent"
urlpatterns = [
    path("", views.control, name="control"),
    path("toggle/", views.toggle, name="toggle"),
    path("run/", views.run_now, name="run_now"),
    path("runs/<id:run_id>/", views.run_progress, name="run_progress"),
    path("config/", views.config_update, name="config"),
    path("intervene/", views.intervene, name="intervene"),
    path("do-not-contact/", views.dnc_add, name="dnc_add"),
    path("do-not-contact/<id:partner_id>/remove/", views.dnc_remove, name="dnc_remove"),
    path("review/<id:intervention_id>/approve/", views.review_approve, name="review_approve"),
    path("review/<id:intervention_id>/reject/", views.review_reject, name="review_reject"),
]
