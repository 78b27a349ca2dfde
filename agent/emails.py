"""Retention email drafts: the LLM writer, with the template writer as its floor.

`draft_retention_email` is the one entry point (the agent and the partner page use it). It never
raises for an LLM failure: without a key, when the LLM times out, errors, or writes something a
manager would not send, the template writer produces the draft and `fallback_reason` says why.

The writer in modules, each with one job:
- `agent.email_text`: text hygiene; partner names and notes are untrusted (links, addresses and
  instruction-like text removed before they reach any prompt or email; a name that reads like an
  instruction is not used at all, and the draft waits for a manager);
- `agent.email_brief`: who signs, and the brief (customer-facing facts and offers the email may
  state, `Playbook.openings`; the prompt carries no internal id, revenue or risk);
- `agent.email_checks`: the safety checks and the quality gate both writers' output passes;
- `agent.email_template`: the template writer;
- `agent.email_prompt` and `agent.email_parse`: what the LLM is asked, and reading its reply;
- `agent.llm`: the client (concurrency, deadlines, retries, reply format, circuit breaker).

The LLM only writes text. Recipients, actions and statuses come from code, so an EmailDraft has
no recipient. Its reply stays plain text (never marked safe).
"""

from __future__ import annotations

import difflib
import logging
import time
from dataclasses import asdict, dataclass

from django.conf import settings

from agent.email_brief import Brief, brief_for, email_sender
from agent.email_checks import InvalidReply, check_email
from agent.email_parse import parse_reply
from agent.email_prompt import MAX_TOKENS, RESPONSE_FORMATS, build_messages, render_prompt
from agent.email_template import template_email
from agent.llm import (
    FORMAT_FALLBACK,
    FORMAT_PLAIN,
    CircuitBreaker,
    LlmError,
    chat_complete,
    llm_configured,
    remember_format,
    reply_format,
    writer_key,
)
from agent.selectors import writer_trust

log = logging.getLogger(__name__)

WRITER_TEMPLATE = "template"  # == Intervention.Writer.TEMPLATE
WRITER_LLM = "llm"  # == Intervention.Writer.LLM
RAW_MAX = 4000  # characters of each raw reply kept in the audit payload

HOLD_UNTRUSTED = "untrusted_model"
HOLD_UNUSABLE_NAME = "partner_name_unusable"
HOLD_TEMPLATE_FAILED = "template_failed_checks"

# A second round after an unusable reply: not for reasons a retry does not change (the model
# echoes the data it is given again), and only with the time for it (the first round's latency
# times this margin) left before the draft's deadline.
NOT_FIXED_BY_RETRY = frozenset({"echoes the data block"})
RETRY_TIME_MARGIN = 1.5


@dataclass(frozen=True)
class EmailDraft:
    subject: str
    body: str
    writer: str  # "llm" | "template": store it on Intervention.writer
    prompt: str = ""  # what was sent to the LLM ("" when nothing was sent)
    attempts: int = 0  # HTTP requests sent to the LLM, retries included
    fallback_reason: str = ""  # "" or why the LLM draft was not used
    model: str = ""  # the model that wrote it ("" for the template)
    duration_ms: int = 0
    writer_key: str = ""  # base URL + model asked (the unit that earns trust)
    reply_format: str = ""  # json_schema | plain: what was asked for last
    # Evidence, one entry per LLM round: format, latency, the raw reply (truncated), the parse
    # result and every check it failed.
    rounds: tuple = ()
    failures: tuple = ()  # every check failure, all rounds (the template's own too)
    hold_reason: str = ""  # "" or why a manager must approve it whatever the tier
    sender_email: str = ""

    def audit_payload(self) -> dict:
        """The fields worth auditing (the prompt is long; callers add it if they want it)."""
        payload = asdict(self)
        payload.pop("body")
        payload.pop("prompt")
        payload["rounds"], payload["failures"] = list(self.rounds), list(self.failures)
        return payload


def _trust_hold(key: str) -> str:
    trust = writer_trust(key=key)
    return "" if trust["trusted"] else HOLD_UNTRUSTED


def _describe(failures) -> list[str]:
    return [str(f) for f in failures]


def _template_draft(*, brief: Brief, started: float, reason: str, **evidence) -> EmailDraft:
    subject, body = template_email(brief=brief)
    failures = check_email(subject=subject, body=body, brief=brief)
    hold = HOLD_UNUSABLE_NAME if brief.name_flagged else ""
    if failures:
        # Never expected (the template is written to pass): a manager decides rather than the agent.
        log.error("Template email for %s failed its checks: %s", brief.external_id, failures)
        hold = HOLD_TEMPLATE_FAILED
    return EmailDraft(
        subject=subject,
        body=body,
        writer=WRITER_TEMPLATE,
        fallback_reason=reason,
        duration_ms=int((time.monotonic() - started) * 1000),
        hold_reason=hold,
        sender_email=brief.sender.email,
        failures=tuple(evidence.pop("failures", ())) + tuple(f"template: {f}" for f in _describe(failures)),
        **evidence,
    )


def _no_retry(retry_reason: str, *, rounds: list[dict], deadline: float, breaker) -> str:
    """Why a second round would not pay ("" when it would).

    - The reason is one a retry does not fix: the same data gets the same echo.
    - The deadline would cut the retry short: a request the client gives up on keeps a local
      one-at-a-time server busy for the next draft (abandoned work), so it is not started
      unless the time left covers the first round's latency with a margin.
    - The run's retry budget (`CircuitBreaker.allow_retry`): retries have stopped rescuing drafts
      in this run, or used their share.
    """
    if retry_reason in NOT_FIXED_BY_RETRY:
        return f"{retry_reason} (a retry does not fix it)"
    served = [r["latency_ms"] - r.get("queued_ms", 0) for r in rounds if "latency_ms" in r]
    needed = RETRY_TIME_MARGIN * (max(served) / 1000 if served else 0.0)
    if deadline - time.monotonic() < needed:
        return "the draft deadline leaves too little time for another request"
    if breaker is not None and not breaker.allow_retry():
        return breaker.retry_refusal()
    return ""


def draft_retention_email(
    *,
    partner,
    drivers: list[dict] | None,
    model: str | None = None,
    breaker: CircuitBreaker | None = None,
    sender_user=None,
) -> EmailDraft:
    """Draft a retention email for `partner` from its risk `drivers`.

    LLM first when a key is configured (a reply that fails the checks is retried once with the
    reason, when a retry can pay: `_no_retry`), else or on any failure the template writer.
    Never raises for LLM failures. `breaker` (one per agent run) skips the LLM once it has failed
    too often in a row, and keeps the run's retry budget.
    """
    started = time.monotonic()
    sender = email_sender(partner, user=sender_user)
    if not llm_configured():
        brief = brief_for(partner=partner, drivers=drivers, sender=sender, examples=False)
        return _template_draft(brief=brief, started=started, reason="no_api_key")
    key = writer_key(model)
    if breaker is not None and not breaker.allow():
        brief = brief_for(partner=partner, drivers=drivers, sender=sender, examples=False)
        return _template_draft(brief=brief, started=started, reason="llm_circuit_open", writer_key=key)
    brief = brief_for(partner=partner, drivers=drivers, sender=sender)

    deadline = started + float(getattr(settings, "OPENAI_DRAFT_DEADLINE", 60.0))
    fmt = reply_format(key)
    retry_reason = reason = ""
    attempts = 0
    rounds: list[dict] = []
    failures: list[str] = []
    round_no = 0
    messages: list[dict] = []
    if breaker is not None:
        breaker.note_draft()
    while round_no < 2:
        if round_no == 1:
            # A second round only when it can pay: see _no_retry.
            skip = _no_retry(retry_reason, rounds=rounds, deadline=deadline, breaker=breaker)
            if skip:
                failures.append(f"no retry: {skip}")
                break
        round_no += 1
        messages = build_messages(brief=brief, fmt=fmt, retry_reason=retry_reason)
        record: dict = {"round": round_no, "format": fmt}
        t0 = time.monotonic()
        try:
            reply = chat_complete(
                messages=messages,
                model=model,
                max_tokens=MAX_TOKENS,
                response_format=RESPONSE_FORMATS[fmt],
                deadline=deadline,
                # The second round is one request: the first already had the transport retries.
                max_retries=None if round_no == 1 else 0,
            )
        except LlmError as exc:
            attempts += exc.attempts
            record.update(
                latency_ms=int((time.monotonic() - t0) * 1000),
                error=str(exc),
                kind=exc.kind,
                raw=exc.raw[:RAW_MAX],
            )
            rounds.append(record)
            if exc.refuses_response_format and fmt in FORMAT_FALLBACK:
                # The server does not take this response_format: learn it once, ask again in
                # the next form (json_schema -> json_object with a schema -> plain text).
                fmt = FORMAT_FALLBACK[fmt]
                remember_format(key, fmt)
                round_no -= 1
                continue
            if breaker is not None:
                breaker.record(ok=not exc.transport, kind=exc.kind)
                if round_no == 2:
                    breaker.record_retry(rescued=False)
            if exc.transport or exc.kind in ("not_configured", "bad_request"):
                reason = exc.kind
                break
            reason = f"invalid_reply: {exc.detail or exc.kind}"
            failures.append(reason)
            retry_reason = exc.detail or exc.kind
            continue
        if breaker is not None:
            breaker.record(ok=True)
        attempts += reply.attempts
        record.update(
            latency_ms=reply.duration_ms,
            queued_ms=reply.queued_ms,
            model=reply.model,
            raw=reply.text[:RAW_MAX],
        )
        try:
            subject, body, parsed_as = parse_reply(reply.text, fmt=fmt, sender=sender)
        except InvalidReply as exc:
            record["parse"] = {"ok": False, "error": exc.reason}
            rounds.append(record)
            reason = f"invalid_reply: {exc.reason}"
            failures.append(reason)
            retry_reason = exc.reason
            if breaker is not None and round_no == 2:
                breaker.record_retry(rescued=False)
            continue
        if fmt != FORMAT_PLAIN and parsed_as == FORMAT_PLAIN:
            remember_format(key, FORMAT_PLAIN)  # the server ignored the schema: ask in plain text
            fmt = FORMAT_PLAIN
        elif fmt != FORMAT_PLAIN:
            remember_format(key, fmt)
        record["parse"] = {"ok": True, "format": parsed_as, "subject": subject, "body": body[:RAW_MAX]}
        checks = check_email(subject=subject, body=body, brief=brief)
        record["failures"] = _describe(checks)
        rounds.append(record)
        if breaker is not None and round_no == 2:
            breaker.record_retry(rescued=not checks)
        if not checks:
            return EmailDraft(
                subject=subject,
                body=body,
                writer=WRITER_LLM,
                prompt=render_prompt(messages),
                attempts=attempts,
                model=reply.model,
                duration_ms=int((time.monotonic() - started) * 1000),
                writer_key=key,
                reply_format=fmt,
                rounds=tuple(rounds),
                failures=tuple(failures),
                hold_reason=HOLD_UNUSABLE_NAME if brief.name_flagged else _trust_hold(key),
                sender_email=sender.email,
            )
        reason = f"invalid_reply: {checks[0]}"
        failures.extend(f"round {round_no}: {c}" for c in _describe(checks))
        retry_reason = checks[0].reason

    log.warning("LLM draft for %s fell back to the template: %s", partner.external_id, reason)
    return _template_draft(
        brief=brief,
        started=started,
        reason=reason,
        prompt=render_prompt(messages),
        attempts=attempts,
        writer_key=key,
        reply_format=fmt,
        rounds=tuple(rounds),
        failures=tuple(failures),
    )


# A manager's edit, in words ---------------------------------------------------------


def diff_in_words(diff: str) -> list[str]:
    """A unified diff of a draft (the review_approved audit payload) as sentences a person
    reads: 'Replaced "X" with "Y"', 'Added "Z"', 'Removed "W"'."""
    before, after = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++", "@@")):
            continue
        if line.startswith("-"):
            before.append(line[1:])
        elif line.startswith("+"):
            after.append(line[1:])
    old, new = " ".join(before).split(), " ".join(after).split()
    changes = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        removed, added = " ".join(old[i1:i2]), " ".join(new[j1:j2])
        if op == "replace":
            changes.append(f'Replaced "{removed}" with "{added}"')
        elif op == "delete":
            changes.append(f'Removed "{removed}"')
        elif op == "insert":
            changes.append(f'Added "{added}"')
    return changes
