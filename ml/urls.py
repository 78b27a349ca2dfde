from django.urls import path

from ml import views

app_name = "ml"
urlpatterns = [
    path("", views.model_page, name="model"),
    path("versions/<id:pk>/activate/", views.model_activate, name="activate"),
]
