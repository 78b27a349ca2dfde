from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db.models import Exists, OuterRef

from churnsite.access import MANAGERS, RETENTION
from desk.selectors import owns_partners


class DeskModelBackend(ModelBackend):
    """Django's model backend, loading with the user what every page asks (the role, the desk
    preference, whether the person owns partners) and the permissions in one query instead
    of two, so the Live Feed stays within 8 queries a page (bench/feed_bench.py)."""

    def get_user(self, user_id):
        model = get_user_model()
        memberships = model.groups.through.objects.filter(user_id=OuterRef("pk"))
        user = (
            model._default_manager.select_related("desk")
            .annotate(
                owns_partners=owns_partners(OuterRef("pk")),
                in_managers=Exists(memberships.filter(group__name=MANAGERS)),
                in_retention=Exists(memberships.filter(group__name=RETENTION)),
            )
            .filter(pk=user_id)
            .first()
        )
        if user is None or not self.user_can_authenticate(user):
            return None
        # What churnsite.access.user_role would otherwise query for (superusers aside).
        user._churnsite_role = MANAGERS if user.in_managers else RETENTION if user.in_retention else None
        return user

    def get_all_permissions(self, user_obj, obj=None):
        """The user's own and their groups' permissions in one UNION query (Django's backend
        runs one for each); superusers and object permissions go to Django's code."""
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None or user_obj.is_superuser:
            return super().get_all_permissions(user_obj, obj)
        if not hasattr(user_obj, "_perm_cache"):
            fields = ("content_type__app_label", "codename")
            # order_by(): without it Permission's default ordering goes into each half, which
            # SQLite refuses in a compound statement (every permission check failed there).
            own = Permission.objects.filter(user=user_obj).values_list(*fields).order_by()
            via_groups = Permission.objects.filter(group__user=user_obj).values_list(*fields).order_by()
            user_obj._perm_cache = {f"{app}.{codename}" for app, codename in own.union(via_groups)}
        return user_obj._perm_cache
