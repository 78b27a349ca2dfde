"""The template writer: the floor under the LLM writer, and the draft whenever no LLM is
configured or its draft cannot be used."""

from __future__ import annotations

from agent.email_brief import Brief


def template_email(*, brief: Brief) -> tuple[str, str]:
    """A plain, human email from the brief: one playbook paragraph per kind of driver, in words a
    partner manager would use (no internal metric, no figure)."""
    sender = brief.sender
    if sender.email:
        intro = (
            f"I'm {sender.name}, and I look after your account. I'm reaching out personally "
            "because I want to make sure you are getting what you need from us."
        )
    else:
        intro = (
            "I'm writing from the Partner Success team because we want to make sure you are "
            "getting what you need from us."
        )
    paragraphs = [brief.greeting, intro]
    if brief.plan:
        for playbook, drivers in brief.plan:
            opening = playbook.opening(drivers[0] if drivers else None)
            paragraphs.append(playbook.render(opening=opening, booking_url=brief.booking_url))
        subject = brief.plan[0][0].subject
    else:
        paragraphs.append(
            "I wanted to check in on how things are going on your side, and whether there is "
            "anything we could be doing better for you."
        )
        subject = "Checking in on how things are going"
    paragraphs.append(
        "Would a short call this week or next work for you? Just reply to this email and I will "
        "find a time that suits you."
    )
    paragraphs.append(brief.signature)
    return subject, "\n\n".join(paragraphs)
