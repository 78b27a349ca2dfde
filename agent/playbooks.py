"""Retention playbooks: what we offer a partner for each kind of risk driver.

Both email writers use them: the template writer turns them into paragraphs, the LLM gets them
as suggested offers. A driver is matched on its feature name (then its text) by keyword, so new
features from the ML side land on a sensible playbook without a change here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Playbook:
    key: str
    keywords: tuple[str, ...]
    subject: str
    # What a partner manager would write about this kind of driver. Never the driver's own
    # figures: "4.2 support tickets per active user" is the model's wording, not a customer's.
    paragraph: str
    offer: str  # one line for the LLM prompt: what we propose
    # The email is "about" this playbook when its body uses one of these words (the quality gate).
    topic_words: tuple[str, ...] = ()
    # Driver feature keyword -> the opening sentence a partner manager would write about it;
    # the first entry is the default. These are also the facts the LLM may state.
    openings: tuple[tuple[str, str], ...] = ()

    def opening(self, driver: dict | None) -> str:
        feature = str((driver or {}).get("feature") or "").lower()
        for keyword, sentence in self.openings:
            if keyword and keyword in feature:
                return sentence
        return self.openings[0][1]

    def render(self, *, opening: str, booking_url: str = "") -> str:
        text = f"{opening} {self.paragraph}"
        if self.key == "enablement":
            text += (
                f" You can pick a time that suits you here: {booking_url}"
                if booking_url
                else " Just reply with a couple of times that suit you and I will set it up."
            )
        return text


BILLING = Playbook(
    key="billing",
    keywords=("overdue", "payment", "invoice", "billing", "arrear", "late", "dso"),
    subject="Can we help with your open invoice?",
    paragraph=(
        "If anything on an invoice is unclear, "
        "or the timing is difficult right now, our billing team can help: we can walk through the "
        "amount with you, split it into instalments, or move your billing date so it lines up "
        "better with your cash flow."
    ),
    offer="Billing help: walk through the open invoice, a payment plan, or a new billing date.",
    topic_words=("invoice", "billing", "payment"),
    openings=(
        ("", "I saw that an invoice is still open on your account."),
        ("late", "I noticed that some recent invoices were paid later than usual."),
        ("days_to_pay", "I noticed that some recent invoices were paid later than usual."),
    ),
)
ENABLEMENT = Playbook(
    key="enablement",
    keywords=(
        "transaction",
        "usage",
        "active_user",
        "login",
        "volume",
        "revenue",
        "trend",
        "velocity",
        "activity",
        "decline",
        "engagement",
        "inactive",
    ),
    subject="A free enablement session for your team",
    paragraph=(
        "That often "
        "means something in the setup is not working as well as it should, so I would like to offer "
        "your team a free 30-minute enablement session with one of our solution specialists, to look "
        "at your current workflows and share what works well for similar partners."
    ),
    offer="A free 30-minute enablement session with a solution specialist.",
    topic_words=("session", "enablement", "activity", "using", "usage", "workflow"),
    openings=(
        ("", "I noticed that activity on your account has slowed over the last few months."),
        ("transaction", "I noticed that fewer transactions have gone through your account recently."),
        ("active_user", "I noticed that fewer people on your team have been using the platform recently."),
        ("revenue", "I noticed that your business with us has been quieter over the last few months."),
    ),
)
SUPPORT = Playbook(
    key="support",
    keywords=("support", "ticket", "complaint", "incident", "escalation", "csat", "nps"),
    subject="Our support lead is looking into your tickets",
    paragraph=(
        "I have asked our support lead to review your open and recent "
        "tickets personally and to follow up with you directly."
    ),
    offer="Escalation: the support lead reviews the partner's tickets personally and follows up.",
    topic_words=("support", "ticket"),
    openings=(
        (
            "",
            "I know your team has needed our support a lot lately, and that is not the experience we want for you.",
        ),
    ),
)
ONBOARDING = Playbook(
    key="onboarding",
    keywords=("tenure", "joined", "onboard", "account_age", "months_active", "new_partner"),
    subject="Checking in on your first months with us",
    paragraph=(
        "I would be glad to run a short onboarding check-in to make sure "
        "everything is set up the way your team needs."
    ),
    offer="An onboarding check-in to make sure the setup fits the partner's needs.",
    topic_words=("onboarding", "set up", "setup", "first months", "new"),
    openings=(
        (
            "",
            "You are still fairly new with us, and the first months are when a little extra help goes furthest.",
        ),
    ),
)
PLAN_REVIEW = Playbook(
    key="plan_review",
    keywords=("tier", "plan", "price", "pricing", "discount", "contract", "renewal", "fee"),
    subject="Making sure your plan still fits",
    paragraph=(
        "I am happy to review it with you and look at whether a different setup would serve you better."
    ),
    offer="An account review to check the plan and terms still fit the partner.",
    topic_words=("plan", "terms", "review"),
    openings=(("", "I would like to make sure your plan still fits the way you work with us."),),
)
GENERIC = Playbook(
    key="check_in",
    keywords=(),
    subject="Checking in on how things are going",
    paragraph=("I would love to hear whether there is anything we could be doing better for you."),
    offer="A check-in call to hear how things are going and what we could do better.",
    topic_words=(),
    openings=(("", "I wanted to check in on how things are going on your side."),),
)

PLAYBOOKS: tuple[Playbook, ...] = (BILLING, SUPPORT, ENABLEMENT, ONBOARDING, PLAN_REVIEW)


def playbook_for(driver: dict) -> Playbook:
    feature = str(driver.get("feature") or "").lower()
    text = str(driver.get("text") or "").lower()
    for haystack in (feature, text):
        for playbook in PLAYBOOKS:
            if any(keyword in haystack for keyword in playbook.keywords):
                return playbook
    return GENERIC


# Signals that explain the model but are no reason to write to a partner (and "similar partners
# churn at 30%" must never reach one). Sizes and levels are who they are, not a sign of decline:
# "activity has slowed (plan revenue $993 a month)" or "(587 transactions a month)" reads as
# nonsense to the partner; the trend features carry the decline.
CONTEXT_FEATURES = frozenset(
    {
        "segment",
        "region",
        "historical_churn_rate",
        "historical_churn_speed",
        "monthly_revenue",
        "months_of_history",
        "transactions_1m",
        "transactions_3m",
        "active_users_1m",
        "active_users_3m",
        "revenue_3m",
    }
)
LONG_TENURE_DAYS = 548  # past ~18 months "you are still fairly new" would be wrong


def is_context(driver: dict) -> bool:
    feature = str(driver.get("feature") or "").lower()
    if feature in CONTEXT_FEATURES or "churn" in feature or "churn" in str(driver.get("text") or "").lower():
        return True
    if feature == "tenure_days":
        value = driver.get("value")
        if value is None:
            return True
        try:
            return float(value) > LONG_TENURE_DAYS
        except (TypeError, ValueError):
            return True
    return False


def risk_drivers(drivers: list[dict] | None) -> list[dict]:
    """Drivers that push the risk up (positive points), strongest first, worth writing about.

    Negative drivers lower the risk (e.g. a long tenure); they are not reasons to reach out.
    """
    usable = []
    for driver in drivers or []:
        if not isinstance(driver, dict) or not str(driver.get("text") or "").strip() or is_context(driver):
            continue
        try:
            points = float(driver.get("points") or 0)
        except (TypeError, ValueError):
            points = 0.0
        if points >= 0:
            usable.append((points, driver))
    usable.sort(key=lambda pair: pair[0], reverse=True)
    return [driver for _, driver in usable]


def plan_for(drivers: list[dict] | None, *, limit: int = 3) -> list[tuple[Playbook, list[dict]]]:
    """The playbooks to use, in order of the strongest driver, each with its drivers."""
    plan: dict[str, tuple[Playbook, list[dict]]] = {}
    for driver in risk_drivers(drivers):
        playbook = playbook_for(driver)
        if playbook.key not in plan:
            if len(plan) >= limit:
                continue
            plan[playbook.key] = (playbook, [])
        plan[playbook.key][1].append(driver)
    return list(plan.values())
