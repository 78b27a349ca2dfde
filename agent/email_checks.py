"""The checks both writers' emails pass before they can go out (`check_email`):

- safety: no link, address, domain or phone number the product did not supply (domains only
  from the product's settings, never from partner data), no placeholder, no echoed data block;
- the quality gate: greets the partner by name, signs as the sender, is about the top driver's
  topic, a sane length, and states no figure, price, discount, offer or date that is not in the
  brief's fact list, no internal id and no other partner's name.
"""

from __future__ import annotations

import re

from agent.email_brief import Allowed, Brief
from agent.email_text import DATA_BEGIN, DATA_END, DOMAIN_RE, EMAIL_RE, PHONE_RE, URL_RE

SUBJECT_MAX = 120
BODY_MIN = 80
BODY_MAX = 2500
WORDS_MIN = 40
WORDS_MAX = 300


class InvalidReply(ValueError):
    """The LLM's reply cannot be sent as it is.

    `reason` is our own wording (safe to send back to the LLM); `evidence` quotes the reply
    (for the audit trail only).
    """

    def __init__(self, reason: str, evidence: str = ""):
        super().__init__(f"{reason} {evidence!r}" if evidence else reason)
        self.reason = reason
        self.evidence = evidence


PLACEHOLDER_RES = (
    re.compile(r"\[[^\]\n]{1,80}\]"),
    re.compile(r"\{\{.*?\}\}", re.DOTALL),
    re.compile(r"\{[^{}\n]{1,60}\}"),
    re.compile(r"<[^<>\n]{1,80}>"),
    re.compile(r"(?i)\bx{3,}\b"),
    re.compile(r"(?i)\b(?:your name|recipient'?s? name|company name|insert [a-z ]{1,30}|lorem ipsum|TBD)\b"),
)
DATA_KEYS_RE = re.compile(
    r"(?i)\b(?:partner_name|why_we_write|what_to_offer|sender_name|sender_title|sender_email|sign_off|"
    r"booking_link|account_team_notes|approved_examples|greeting_line)\b|^\s*[{}\[\]]\s*$|^\s*\"\w+\"\s*:",
    re.MULTILINE,
)
GREETING_RE = re.compile(
    r"(?i)^\W*(?:hi|hello|hey|dear|greetings|good (?:morning|afternoon|day|evening))\b(.*)$"
)
GREETING_FILLER = {
    "team",
    "there",
    "all",
    "everyone",
    "folks",
    "the",
    "and",
    "at",
    "to",
    "friends",
    "partner",
    "partners",
}
LEGAL_SUFFIXES = {
    "ltd",
    "inc",
    "llc",
    "gmbh",
    "co",
    "corp",
    "plc",
    "sa",
    "ag",
    "bv",
    "limited",
    "srl",
    "oy",
    "ab",
}
INTERNAL_ID_RE = re.compile(r"\b[A-Z]{1,4}-?\d{4,}\b")
NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
OFFER_WORDS = (
    "discount",
    "rebate",
    "refund",
    "credit",
    "waive",
    "commission",
    "cashback",
    "cash back",
    "coupon",
    "voucher",
    "promo",
    "free month",
    "free trial",
    "percent",
    "% off",
    "price cut",
    "lower price",
    "bonus",
    "days off",
    "gift",
)
MONTH_RE = re.compile(
    r"\b(?:January|February|March|April|June|July|August|September|October|November|December|May(?= \d))\b"
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _names_in(name: str, line: str) -> bool:
    """Does `line` name the partner (its name, or its name without "Ltd", "GmbH"...)?"""
    words, target = _words(line), _words(name)
    core = [w for w in target if w not in LEGAL_SUFFIXES] or target
    for candidate in (target, core):
        n = len(candidate)
        if n and any(words[i : i + n] == candidate for i in range(len(words) - n + 1)):
            return True
    return False


def _numbers(text: str) -> set[str]:
    return {m.group(0).replace(",", "").rstrip(".") for m in NUMBER_RE.finditer(text)}


def safety_failures(*, subject: str, body: str, allowed: Allowed) -> list[InvalidReply]:
    failures = []
    if not subject:
        failures.append(InvalidReply("empty subject"))
    if len(subject) > SUBJECT_MAX:
        failures.append(InvalidReply(f"subject longer than {SUBJECT_MAX} characters"))
    if len(body) < BODY_MIN:
        failures.append(InvalidReply(f"body shorter than {BODY_MIN} characters"))
    if len(body) > BODY_MAX:
        failures.append(InvalidReply(f"body longer than {BODY_MAX} characters"))
    text = f"{subject}\n{body}"
    for pattern in PLACEHOLDER_RES:
        match = pattern.search(text)
        if match:
            failures.append(InvalidReply("unfilled placeholder", match.group(0)[:40]))
            break
    for match in EMAIL_RE.finditer(text):
        if match.group(0).lower().rstrip(".") not in allowed.emails:
            failures.append(InvalidReply("unsupplied email address", match.group(0)[:60]))
            break
    without_emails = EMAIL_RE.sub(" ", text)
    for match in URL_RE.finditer(without_emails):
        url = match.group(0).rstrip(".,;:!?")
        if url not in allowed.urls:
            failures.append(InvalidReply("unsupplied link", url[:80]))
            break
    bare = URL_RE.sub(" ", without_emails)
    for match in DOMAIN_RE.finditer(bare):
        if match.group(0).lower() not in allowed.domains:
            failures.append(InvalidReply("unsupplied link", match.group(0)[:80]))
            break
    for match in PHONE_RE.finditer(text):
        if sum(ch.isdigit() for ch in match.group(0)) >= 7:
            failures.append(InvalidReply("phone number", match.group(0)[:30]))
            break
    return failures


def quality_failures(*, subject: str, body: str, brief: Brief) -> list[InvalidReply]:
    """Would a manager sign it? Each failure names the rule, in our words."""
    failures = []
    text = f"{subject}\n{body}"
    lines = [line.strip() for line in body.split("\n") if line.strip()]
    first = lines[0] if lines else ""
    greeting = GREETING_RE.match(first)
    if not greeting:
        failures.append(InvalidReply("no greeting", first[:60]))
    elif brief.partner_name and not _names_in(brief.partner_name, first):
        rest = [w for w in _words(greeting.group(1)) if w not in GREETING_FILLER]
        reason = "wrong partner name" if rest else "does not greet the partner by name"
        failures.append(InvalidReply(reason, first[:60]))
    for name in brief.other_names:
        if _names_in(name, text):
            failures.append(InvalidReply("another partner's name", name[:60]))
    tail = "\n".join(lines[-4:])
    if not _names_in(brief.sender.name, tail):
        failures.append(InvalidReply("not signed by the sender", (lines[-1] if lines else "")[:60]))
    topic = brief.topic
    if topic is not None and topic.topic_words and not any(w in text.lower() for w in topic.topic_words):
        failures.append(InvalidReply("does not address the main topic", topic.key))
    n_words = len(body.split())
    if n_words < WORDS_MIN:
        failures.append(InvalidReply(f"shorter than {WORDS_MIN} words", str(n_words)))
    if n_words > WORDS_MAX:
        failures.append(InvalidReply(f"longer than {WORDS_MAX} words", str(n_words)))
    if brief.external_id and re.search(rf"(?i)\b{re.escape(brief.external_id)}\b", text):
        failures.append(InvalidReply("internal id", brief.external_id))
    elif match := INTERNAL_ID_RE.search(text):
        failures.append(InvalidReply("internal id", match.group(0)))
    # Facts: every figure, offer and date must come from the fact list.
    scrubbed = URL_RE.sub(" ", EMAIL_RE.sub(" ", text))
    allowed_numbers = _numbers(brief.fact_text)
    invented = sorted(_numbers(scrubbed) - allowed_numbers)
    if invented:
        failures.append(InvalidReply("figure not in the fact list", ", ".join(invented)[:60]))
    facts_lower = brief.fact_text.lower()
    for word in OFFER_WORDS:
        if word in text.lower() and word not in facts_lower:
            failures.append(InvalidReply("offer not in the fact list", word))
            break
    if "$" in text or "€" in text or "£" in text:
        failures.append(InvalidReply("price not in the fact list"))
    if match := MONTH_RE.search(text):
        if match.group(0) not in brief.fact_text:
            failures.append(InvalidReply("date not in the fact list", match.group(0)))
    return failures


def check_email(*, subject: str, body: str, brief: Brief) -> list[InvalidReply]:
    """Every reason the email cannot go out as it is (empty list: it can)."""
    text = f"{subject}\n{body}"
    if DATA_BEGIN in text or DATA_END in text or "PARTNER_DATA" in text or DATA_KEYS_RE.search(text):
        # An echo of the data block says nothing about the rest: reject it early.
        return [InvalidReply("echoes the data block")]
    return safety_failures(subject=subject, body=body, allowed=brief.allowed) + quality_failures(
        subject=subject, body=body, brief=brief
    )


def validate_email(*, subject: str, body: str, brief: Brief) -> None:
    failures = check_email(subject=subject, body=body, brief=brief)
    if failures:
        raise failures[0]
