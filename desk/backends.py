from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet, TextField
from django.db.models.expressions import RawSQL

from churnsite.access import MANAGERS, RETENTION, permissions_sql, user_access_prime
from churnsite.compiled import CompiledQuery
from desk.models import DeskPreference
from desk.selectors import owns_partners

_DESK_FIELDS = [f.attname for f in DeskPreference._meta.concrete_fields if f.attname != "user_id"]


def _user_query(user_id: int) -> QuerySet:
    """The user, its desk preference, whether it owns partners, its role and its permissions."""
    model = get_user_model()
    memberships = model.groups.through.objects.filter(user_id=OuterRef("pk"))
    table = model._meta.db_table
    return (
        model._default_manager.filter(pk=user_id)
        .annotate(
            owns_partners=owns_partners(OuterRef("pk")),
            in_managers=Exists(memberships.filter(group__name=MANAGERS)),
            in_retention=Exists(memberships.filter(group__name=RETENTION)),
            permissions=RawSQL(
                permissions_sql(connection.vendor, f'"{table}"."id"'), [], output_field=TextField()
            ),
        )
        .values(
            *[f.attname for f in model._meta.concrete_fields],
            *[f"desk__{name}" for name in _DESK_FIELDS],
            "owns_partners",
            "in_managers",
            "in_retention",
            "permissions",
        )
    )


# Compiled once per process: building and compiling this queryset (three EXISTS, a join and
# the permissions) cost 3 ms of CPU on every page view (bench/feed_bench.py).
_USER = CompiledQuery(_user_query, user_id=-1)


class DeskModelBackend(ModelBackend):
    """Django's model backend, loading with the user what every page asks (the role, the
    permissions, the desk preference, whether the person owns partners) in one query instead
    of three, so the Live Feed stays within 8 queries a page (bench/feed_bench.py)."""

    def get_user(self, user_id: Any) -> Any:
        model = get_user_model()
        try:
            user_id = model._meta.pk.to_python(user_id)
        except ValidationError:  # a session with a malformed id is nobody's
            return None
        row = _USER.first(user_id=user_id)
        if row is None:
            return None
        names = [f.attname for f in model._meta.concrete_fields]
        user = model.from_db("default", names, [row[name] for name in names])
        if not self.user_can_authenticate(user):
            return None
        setattr(user, "owns_partners", row["owns_partners"])  # noqa: B010 - read by desk.selectors.feed_scope
        desk = None
        if row["desk__id"] is not None:
            desk = DeskPreference.from_db(
                "default", [*_DESK_FIELDS, "user_id"], [*(row[f"desk__{n}"] for n in _DESK_FIELDS), user.pk]
            )
            DeskPreference.user.field.set_cached_value(desk, user)
        # As select_related("desk") would: no preference reads as DoesNotExist without a query.
        model.desk.related.set_cached_value(user, desk)
        user_access_prime(
            user,
            in_managers=row["in_managers"],
            in_retention=row["in_retention"],
            permissions=row["permissions"],
        )
        return user

    def get_all_permissions(self, user_obj, obj=None):
        """The user's own and their groups' permissions in one UNION query (Django's backend
        runs one for each) when get_user did not load them; superusers and object permissions
        go to Django's code."""
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
