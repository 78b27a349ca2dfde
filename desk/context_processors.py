from django.utils.functional import SimpleLazyObject


def saved_views(request) -> dict:
    """The saved Live Feed views for the navigation; queried only when a page renders them."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from desk.selectors import saved_views_for

    return {"saved_views": SimpleLazyObject(lambda: list(saved_views_for(user=user)))}
