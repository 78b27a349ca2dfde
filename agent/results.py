"""What the workflow did with one partner: the result codes (also the run summary's keys) and
the words the pages show for them ("intervene now", the review page)."""

from __future__ import annotations

from agent.models import AgentConfig

# Per-partner results, also the keys of the run summary.
EXECUTED = "executed"
HELD = "held_for_review"
HOLDOUT = "holdouts"
RATE_LIMITED = "rate_limited"
FAILED = "failed"
SKIPPED = "skipped"
STOPPED = "stopped"
NOT_REACHED = "not_reached"


# Why the agent did not act on a partner, in words (the reason codes of the audit trail).
SKIP_REASONS = {
    "not_active": "{p} is not an active partner.",
    "do_not_contact": "{p} is on the do-not-contact list: remove it from the list first.",
    "no_score": "{p} has no risk score yet: the agent writes from its drivers.",
    "below_threshold": "{p} is not above the risk threshold.",
    "cooldown": "{p} was contacted in the last {cooldown} days or has an open agent intervention.",
    "claimed_by_another_worker": "another run was working on {p} at that moment.",
    "open_agent_intervention": "{p} already has an open agent intervention.",
}


def skip_reason_text(reason: str, *, partner_ref: str, config: AgentConfig) -> str:
    return SKIP_REASONS.get(reason, "{p}: " + (reason or "not eligible") + ".").format(
        p=partner_ref, cooldown=config.cooldown_days
    )


def partner_outcome_text(
    result: str, *, partner_ref: str, tier: str, reason: str, config: AgentConfig
) -> str:
    """What "intervene now" did to one partner, as the person who asked should read it."""
    p = partner_ref
    texts = {
        EXECUTED: f"{p} was contacted: the email is sent.",
        HELD: f"{p}: the email is drafted and held for a manager's approval ({tier} tier): not sent yet.",
        HOLDOUT: f"{p} was drawn into the control group: deliberately not contacted, to measure uplift.",
        RATE_LIMITED: f"{p} was not contacted: the hourly cap of {config.max_per_hour} contacts is reached.",
        STOPPED: f"{p} was not contacted: the agent is stopped.",
        FAILED: f"{p}: drafting or sending failed (see the activity log); a queued email is retried.",
    }
    if result == SKIPPED:
        return "Not contacted: " + skip_reason_text(reason, partner_ref=p, config=config)
    return texts.get(result, f"{p}: {result}")
