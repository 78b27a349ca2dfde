"""Receivers that keep cached reads honest (connected in RetentionConfig.ready)."""

from django.core.cache import cache

from retention.selectors import TEAM_CHOICES_CACHE_KEY


def drop_team_choices(**kwargs) -> None:
    """A user saved or deleted, a group renamed, someone added to or removed from a group:
    the Live Feed's owner list is read again on the next page view."""
    if kwargs.get("update_fields") == frozenset({"last_login"}):
        return  # every login saves the user; the list did not change
    cache.delete(TEAM_CHOICES_CACHE_KEY)
