"""The one client for the team's chat: an incoming webhook (Slack and Microsoft Teams both
accept a JSON body {"text": ...}). Owns the timeout and turns every failure into ChatError."""

import json
import urllib.error
import urllib.request

from django.conf import settings


class ChatError(Exception):
    pass


def chat_post(*, text: str, url: str | None = None, timeout: float | None = None) -> None:
    url = url or settings.CHAT_WEBHOOK_URL
    if not url:
        raise ChatError("CHAT_WEBHOOK_URL is not set")
    request = urllib.request.Request(
        url,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout or settings.CHAT_WEBHOOK_TIMEOUT) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        raise ChatError(f"HTTP {exc.code} from the webhook") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ChatError(f"{type(exc).__name__}: {exc}") from exc
