from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.templatetags.static import static
from django.urls import include, path, register_converter
from django.views.generic import RedirectView

from api.api import api, api_root
from churnsite.health import healthz
from churnsite.http import IdConverter

# Before the apps' urls are included: they use <id:...> for database ids.
register_converter(IdConverter, "id")


def _api_urls():
    """The API authenticates each request itself (token or session; 401, not a login redirect)."""
    patterns, app_name, namespace = api.urls
    # ninja's root page is a 404 unless DEBUG: here it sends a caller with access to the docs.
    patterns = [api_root if getattr(p, "name", None) == "api-root" else p for p in patterns]
    for pattern in patterns:
        login_not_required(pattern.callback)
    return patterns, app_name, namespace


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Browsers ask for /favicon.ico on every page, the admin's included.
    path(
        "favicon.ico",
        login_not_required(RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
        name="favicon",
    ),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("agent/", include("agent.urls")),
    path("crm/", include("crm_sim.urls")),
    path("model/", include("ml.urls")),
    path("desk/", include("desk.urls")),
    path("api/v1/", _api_urls()),
    path("", include("api.urls")),
    path("", include("retention.urls")),
]
