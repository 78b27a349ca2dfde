from django.urls import path

from retention.views import feed, import_page, intervention_log, outcomes, partner

app_name = "retention"
urlpatterns = [
    path("", feed.live_feed, name="home"),
    path("feed/poll/", feed.live_feed_poll, name="feed_poll"),
    path("feed/export.csv", feed.live_feed_export, name="feed_export"),
    path("partners/", feed.partner_list, name="partner_list"),
    path("partners/<str:external_id>/", partner.partner_detail, name="partner_detail"),
    path(
        "partners/<str:external_id>/interventions/",
        partner.partner_log_intervention,
        name="partner_log_intervention",
    ),
    path("partners/<str:external_id>/draft-email/", partner.partner_draft_email, name="partner_draft_email"),
    path("partners/<str:external_id>/send-email/", partner.partner_send_email, name="partner_send_email"),
    path("interventions/", intervention_log.intervention_list, name="intervention_list"),
    path("interventions/export.csv", intervention_log.intervention_export, name="intervention_export"),
    path(
        "interventions/<id:pk>/outcome/", intervention_log.intervention_outcome, name="intervention_outcome"
    ),
    path(
        "interventions/<id:pk>/outcome/undo/",
        intervention_log.intervention_outcome_undo,
        name="intervention_outcome_undo",
    ),
    path("outcomes/", outcomes.outcomes, name="outcomes"),
    path("import/", import_page.import_page, name="import"),
    path("outcomes/assumptions/", outcomes.outcomes_assumptions, name="outcomes_assumptions"),
]
