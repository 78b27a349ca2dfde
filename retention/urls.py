from django.urls import path

from retention import views

app_name = "retention"
urlpatterns = [
    path("", views.live_feed, name="home"),
    path("feed/poll/", views.live_feed_poll, name="feed_poll"),
    path("feed/export.csv", views.live_feed_export, name="feed_export"),
    path("partners/", views.partner_list, name="partner_list"),
    path("partners/<str:external_id>/", views.partner_detail, name="partner_detail"),
    path(
        "partners/<str:external_id>/interventions/",
        views.partner_log_intervention,
        name="partner_log_intervention",
    ),
    path("partners/<str:external_id>/draft-email/", views.partner_draft_email, name="partner_draft_email"),
    path("partners/<str:external_id>/send-email/", views.partner_send_email, name="partner_send_email"),
    path("interventions/", views.intervention_list, name="intervention_list"),
    path("interventions/export.csv", views.intervention_export, name="intervention_export"),
    path("interventions/<id:pk>/outcome/", views.intervention_outcome, name="intervention_outcome"),
    path(
        "interventions/<id:pk>/outcome/undo/",
        views.intervention_outcome_undo,
        name="intervention_outcome_undo",
    ),
    path("outcomes/", views.outcomes, name="outcomes"),
    path("import/", views.import_page, name="import"),
    path("outcomes/assumptions/", views.outcomes_assumptions, name="outcomes_assumptions"),
]
