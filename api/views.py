"""The site's pages of the API: a person's tokens (profile), and managers' webhook subscriptions
with their deliveries and a replay button. Thin views over api.tokens and api.webhooks."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from api import tokens, webhooks
from api.forms import TokenForm, WebhookForm
from api.models import ApiToken, WebhookDelivery, WebhookSubscription
from churnsite.access import AuthedHttpRequest, permission_required


def _tokens_page(
    request: AuthedHttpRequest, form: TokenForm | None = None, new_token: str = "", status: int = 200
):
    context = {
        "form": form or TokenForm(),
        "tokens": ApiToken.objects.filter(user=request.user).order_by("-created_at"),
        "new_token": new_token,
    }
    return render(request, "api/tokens.html", context, status=status)


@permission_required("api.add_apitoken")
def token_list(request: AuthedHttpRequest) -> HttpResponse:
    return _tokens_page(request)


@permission_required("api.add_apitoken")
@require_POST
def token_create(request: AuthedHttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, form, status=400)
    _, token = tokens.api_token_create(user=request.user, name=form.cleaned_data["name"], actor=request.user)
    # Rendered, not redirected: the token is shown this once and never stored.
    return _tokens_page(request, new_token=token)


@permission_required("api.add_apitoken")
@require_POST
def token_revoke(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    tokens.api_token_revoke(token=token, actor=request.user)
    messages.success(request, f"Revoked {token}.")
    return redirect("api:tokens")


# Webhooks (managers) ---------------------------------------------------------------------------


def _webhooks_page(request: AuthedHttpRequest, form: WebhookForm | None = None, status: int = 200):
    context = {
        "form": form or WebhookForm(),
        "subscriptions": WebhookSubscription.objects.order_by("pk"),
        "deliveries": WebhookDelivery.objects.select_related("subscription").order_by("-created_at", "-pk")[
            :50
        ],
    }
    return render(request, "api/webhooks.html", context, status=status)


@permission_required("api.view_webhooksubscription", message="Only managers manage webhooks.")
def webhook_list(request: AuthedHttpRequest) -> HttpResponse:
    return _webhooks_page(request)


@permission_required("api.add_webhooksubscription", message="Only managers manage webhooks.")
@require_POST
def webhook_create(request: AuthedHttpRequest) -> HttpResponse:
    form = WebhookForm(request.POST)
    if form.is_valid():
        try:
            webhooks.webhook_subscription_create(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Subscribed {form.cleaned_data['url']}.")
            return redirect("api:webhooks")
    return _webhooks_page(request, form, status=400)


@permission_required("api.delete_webhooksubscription", message="Only managers manage webhooks.")
@require_POST
def webhook_delete(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    subscription = get_object_or_404(WebhookSubscription, pk=pk)
    webhooks.webhook_subscription_delete(subscription=subscription, actor=request.user)
    messages.success(request, f"Deleted the subscription of {subscription.url}.")
    return redirect("api:webhooks")


@permission_required("api.view_webhooksubscription", message="Only managers manage webhooks.")
def delivery_detail(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(WebhookDelivery.objects.select_related("subscription"), pk=pk)
    return render(
        request, "api/delivery.html", {"delivery": delivery, "attempts": delivery.attempt_log.all()}
    )


@permission_required("api.change_webhooksubscription", message="Only managers replay webhooks.")
@require_POST
def delivery_replay(request: AuthedHttpRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(WebhookDelivery, pk=pk)
    try:
        webhooks.webhook_delivery_replay(delivery=delivery, actor=request.user)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Delivery {delivery.pk} ({delivery.event}) queued again.")
    return redirect("api:webhooks")
