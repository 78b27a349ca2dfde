from django.urls import path

from api import views

app_name = "api"
urlpatterns = [
    path("profile/tokens/", views.token_list, name="tokens"),
    path("profile/tokens/new/", views.token_create, name="token_create"),
    path("profile/tokens/<id:pk>/revoke/", views.token_revoke, name="token_revoke"),
    path("webhooks/", views.webhook_list, name="webhooks"),
    path("webhooks/new/", views.webhook_create, name="webhook_create"),
    path("webhooks/<id:pk>/delete/", views.webhook_delete, name="webhook_delete"),
    path("webhooks/deliveries/<id:pk>/", views.delivery_detail, name="delivery_detail"),
    path("webhooks/deliveries/<id:pk>/replay/", views.delivery_replay, name="delivery_replay"),
]
