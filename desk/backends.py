from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.db.models import OuterRef


class DeskModelBackend(ModelBackend):
    """Django's model backend, loading with the user what the Live Feed needs on every page
    (the desk preference and whether the person owns partners), so "my partners by default"
    costs no query of its own: the feed stays within its 8 queries a page."""

    def get_user(self, user_id):
        from desk.selectors import owns_partners

        manager = get_user_model()._default_manager
        user = (
            manager.select_related("desk")
            .annotate(owns_partners=owns_partners(OuterRef("pk")))
            .filter(pk=user_id)
            .first()
        )
        return user if user is not None and self.user_can_authenticate(user) else None
