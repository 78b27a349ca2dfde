from django.urls import path

from retention import views

app_name = "retention"
urlpatterns = [
    path("", views.partner_list, name="home"),
    path("partners/", views.partner_list, name="partner_list"),
]
