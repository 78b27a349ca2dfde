"""Who signs a retention email, and the brief a writer works from: the customer-facing facts
and offers it may state, what links and addresses it may repeat, and managers' approved edits
for the same playbook as examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr
from urllib.parse import urlsplit

from django.conf import settings

from agent.email_text import clean_text, partner_display_name, sanitize_untrusted
from agent.playbooks import Playbook, plan_for
from agent.selectors import approved_edited_examples

NOTES_MAX = 400
EXAMPLES = 3


@dataclass(frozen=True)
class Sender:
    name: str
    title: str
    email: str


def _sender_of(user) -> Sender | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name = clean_text(user.get_full_name() or user.get_username(), single_line=True)
    return Sender(name=name, title="Partner Success", email=(user.email or "").strip())


def email_sender(partner, *, user=None) -> Sender:
    """Who signs: the user who sends (the partner page), else the account owner, else the team."""
    sender = _sender_of(user) or _sender_of(getattr(partner, "account_owner", None))
    return sender or Sender(name="Partner Success team", title="", email="")


def email_reply_to(intervention) -> list[str] | None:
    """Reply-To for a sent intervention: the same person the draft was signed by."""
    source_manual = getattr(intervention, "source", "") == "manual"
    user = getattr(intervention, "created_by", None) if source_manual else None
    sender = email_sender(intervention.partner, user=user)
    return [sender.email] if sender.email else None


def _booking_url() -> str:
    return (getattr(settings, "RETENTION_BOOKING_URL", "") or "").strip()


# What the email may say ----------------------------------------------------------


@dataclass(frozen=True)
class Allowed:
    """What the product supplied and an email may repeat."""

    emails: frozenset[str]
    urls: tuple[str, ...]
    domains: frozenset[str]


def allowed_for(*, sender: Sender, booking_url: str) -> Allowed:
    """Only the product's own settings and the sender: never anything from partner data."""
    emails = {sender.email.lower()} if sender.email else set()
    domains = {e.split("@", 1)[1] for e in emails}
    from_address = parseaddr(getattr(settings, "DEFAULT_FROM_EMAIL", "") or "")[1].lower()
    if "@" in from_address:
        domains.add(from_address.split("@", 1)[1])
    if booking_url:
        domains.add((urlsplit(booking_url).hostname or "").lower())
    return Allowed(
        emails=frozenset(emails), urls=(booking_url,) if booking_url else (), domains=frozenset(domains)
    )


@dataclass(frozen=True)
class Example:
    subject: str
    body: str


@dataclass(frozen=True)
class Brief:
    """Everything a writer may use for one partner, and what the checks hold it to."""

    partner_name: str  # "" when the name is not usable
    external_id: str
    sender: Sender
    booking_url: str
    plan: tuple[tuple[Playbook, tuple[dict, ...]], ...]
    facts: tuple[str, ...]  # customer-facing sentences the email may state
    offers: tuple[str, ...]
    notes: str
    allowed: Allowed
    examples: tuple[Example, ...] = ()
    other_names: frozenset[str] = field(default_factory=frozenset)  # the examples' partners
    name_flagged: bool = False

    @property
    def topic(self) -> Playbook | None:
        return self.plan[0][0] if self.plan else None

    @property
    def greeting(self) -> str:
        return f"Hi {self.partner_name} team," if self.partner_name else "Hello,"

    @property
    def signature(self) -> str:
        s = self.sender
        return "\n".join(line for line in ("Best regards,", s.name, s.title, s.email) if line)

    @property
    def fact_text(self) -> str:
        """The text whose figures, offers and dates an email may repeat."""
        return "\n".join(
            [
                *self.facts,
                *self.offers,
                self.partner_name,
                self.sender.name,
                self.sender.title,
                self.booking_url,
            ]
        )


def brief_for(*, partner, drivers: list[dict] | None, sender: Sender, examples: bool = True) -> Brief:
    plan = plan_for(drivers, limit=3)
    booking_url = _booking_url()
    facts = []
    for playbook, group in plan:
        sentence = playbook.opening(group[0] if group else None)
        if sentence not in facts:
            facts.append(sentence)
    name = partner_display_name(partner)
    found: list[Example] = []
    other: set[str] = set()
    if examples and plan:
        for ex in approved_edited_examples(playbook_key=plan[0][0].key, exclude_partner_id=partner.pk):
            body = ex["body"]
            # The manager's phrasing, with this partner's greeting and this sender's name.
            if ex["partner_name"] and name:
                body = body.replace(ex["partner_name"], name)
                other.add(ex["partner_name"])
            if ex["sender_name"] and ex["sender_name"] != sender.name:
                body = body.replace(ex["sender_name"], sender.name)
            found.append(Example(subject=ex["subject"], body=body))
            if len(found) >= EXAMPLES:
                break
    return Brief(
        partner_name=name,
        external_id=str(getattr(partner, "external_id", "") or ""),
        sender=sender,
        booking_url=booking_url,
        plan=tuple((p, tuple(g)) for p, g in plan),
        facts=tuple(facts) or ("I wanted to check in on how things are going on your side.",),
        offers=tuple(p.offer for p, _ in plan)
        or ("A check-in call to hear how things are going and what we could do better.",),
        notes=sanitize_untrusted(getattr(partner, "notes", "") or "")[:NOTES_MAX],
        allowed=allowed_for(sender=sender, booking_url=booking_url),
        examples=tuple(found),
        other_names=frozenset(n for n in other if n and n != name),
        name_flagged=not name and bool((getattr(partner, "name", "") or "").strip()),
    )
