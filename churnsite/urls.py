from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from retention import views as retention_views

urlpatterns = [
    path("healthz", retention_views.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("agent/", include("agent.urls")),
    path("crm/", include("crm_sim.urls")),
    path("model/", include("ml.urls")),
    path("", include("retention.urls")),
]
