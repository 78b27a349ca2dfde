"""Reading the LLM's reply: a JSON object (decoded, never pieced together from fragments) or
the plain-text form ("Subject: ...", blank line, body), with code fences and chatter around it
dropped."""

from __future__ import annotations

import json
import re

from agent.email_brief import Sender
from agent.email_checks import InvalidReply, _names_in
from agent.email_text import clean_text
from agent.llm import FORMAT_JSON_SCHEMA, FORMAT_PLAIN

_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_SUBJECT_LINE = re.compile(r"(?im)^[ \t>*#_]*subject(?: line)?[ \t*_]*[:\-][ \t*_]*(.+?)[ \t*_]*$")
_BODY_LABEL = re.compile(r"(?i)^[ \t*_]*(?:body|email)[ \t*_]*:[ \t*_]*\n?")


def _unfence(text: str, *, want: str) -> str:
    """The fenced block that holds the email (the first with `want` in it), else the text."""
    blocks = _FENCE.findall(text)
    for block in blocks:
        if want in block.lower():
            return block
    return blocks[0] if blocks else text


def parse_json_reply(text: str) -> tuple[str, str]:
    """{"subject", "body"} parsed from the reply (fences and chatter around the object are fine;
    raw newlines inside strings too). The object is decoded, never pieced together."""
    text = _unfence((text or "").strip(), want='"subject"').strip()
    start = text.find("{")
    if start < 0:
        raise InvalidReply("not a JSON object")
    try:
        data, _ = json.JSONDecoder(strict=False).raw_decode(text, start)
    except ValueError:
        raise InvalidReply("not a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidReply("not a JSON object")
    subject, body = data.get("subject"), data.get("body")
    if not isinstance(subject, str) or not isinstance(body, str):
        raise InvalidReply("subject or body missing")
    return clean_text(subject, single_line=True), clean_text(body)


def parse_plain_reply(text: str, *, sender: Sender) -> tuple[str, str]:
    """ "Subject: ...", blank line, body: leading chatter, code fences and chatter after the
    sender's signature are dropped."""
    text = clean_text(_unfence(clean_text(text or ""), want="subject"))
    match = _SUBJECT_LINE.search(text)
    if not match:
        raise InvalidReply("no Subject: line")
    subject = match.group(1).strip().strip('"*_ ')
    lines = _BODY_LABEL.sub("", text[match.end() :].lstrip("\n")).split("\n")
    # Trailing chatter ("Let me know if you want changes!"): cut after the sender's name, keeping
    # the title and address lines of the signature.
    signed = [i for i, line in enumerate(lines) if sender.name and _names_in(sender.name, line)]
    if signed:
        end = signed[-1] + 1
        keep = {sender.title.lower(), sender.email.lower()} - {""}
        while end < len(lines) and lines[end].strip().lower() in keep:
            end += 1
        lines = lines[:end]
    body = clean_text("\n".join(lines).strip().strip("`").strip())
    if not body:
        raise InvalidReply("subject or body missing")
    return clean_text(subject, single_line=True), body


def parse_reply(text: str, *, fmt: str, sender: Sender) -> tuple[str, str, str]:
    """(subject, body, the format it was in). A JSON-mode reply that is plain text is accepted
    as plain text: the server ignored the schema."""
    json_first = fmt != FORMAT_PLAIN or (text or "").lstrip().startswith(("{", "```json"))
    order = (FORMAT_JSON_SCHEMA, FORMAT_PLAIN) if json_first else (FORMAT_PLAIN, FORMAT_JSON_SCHEMA)
    first_error: InvalidReply | None = None
    for kind in order:
        try:
            if kind == FORMAT_JSON_SCHEMA:
                subject, body = parse_json_reply(text)
            else:
                subject, body = parse_plain_reply(text, sender=sender)
            return subject, body, kind
        except InvalidReply as exc:
            first_error = first_error or exc
    assert first_error is not None  # the loop returned or failed at least once
    raise first_error
