from django.utils.functional import SimpleLazyObject

from desk.selectors import saved_views_for


def saved_views(request) -> dict:
    """The saved Live Feed views for the navigation; queried only when a page renders them."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    return {"saved_views": SimpleLazyObject(lambda: list(saved_views_for(user=user)))}
