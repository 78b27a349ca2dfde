"""Text hygiene for retention emails: plain printable text, and partner-supplied text (names,
notes) with links, addresses, phone numbers and instruction-like sentences removed before it
reaches any prompt or email."""

from __future__ import annotations

import re
import unicodedata

# The partner data goes to the LLM between these lines. "<" and ">" are escaped inside the JSON
# (\u003c, \u003e), so no value in the data (a partner name, a note) can close the block.
DATA_BEGIN = "<<<PARTNER_DATA"
DATA_END = "PARTNER_DATA>>>"


def clean_text(text: str, *, single_line: bool = False) -> str:
    """Plain, printable text: no control, format (zero-width, bidi) or private-use characters."""
    text = unicodedata.normalize("NFC", str(text))
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    text = text.replace("\t", " ")
    text = "".join(ch for ch in text if ch == "\n" or not unicodedata.category(ch).startswith("C"))
    if single_line:
        return " ".join(text.split())
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


EMAIL_RE = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
URL_RE = re.compile(r"(?i)\b(?:https?://|ftp://|www\.|mailto:)[^\s<>\"'\])]+")
TLDS = (
    "com|net|org|io|co|ai|app|dev|biz|info|me|us|uk|de|fr|eu|nl|es|it|ca|au|in|ru|cn|ly|link|"
    "example|xyz|site|online|shop|store|to|gg|cc|tk|zip|click|top"
)
DOMAIN_RE = re.compile(rf"(?i)\b(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{TLDS})\b")
PHONE_RE = re.compile(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}\b")
# Text that addresses a reader instead of describing a partner: "ignore previous instructions",
# "System:", "you are now", "email all partners at ...".
INSTRUCTION_RE = re.compile(
    r"(?i)\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:instructions?|prompts?|rules?|above|"
    r"previous|prior|everything)\b|\b(?:system|assistant|developer|user)\s*:|\byou are now\b|"
    r"\bact as\b|\bnew instructions?\b|\bprompt\b|\b(?:send|e-?mail|forward|write|reply)\b.{0,30}"
    r"\b(?:to|all)\b.{0,40}(?:@|\bpartners\b|\beveryone\b|\bcustomers\b|\baddress)"
)


def _strip_contacts(text: str) -> str:
    text = URL_RE.sub(" ", EMAIL_RE.sub(" ", text))
    # "Acme.io" -> "Acme": the partner may be called that, but its domain is not ours to send.
    text = DOMAIN_RE.sub(lambda m: m.group(0).split(".", 1)[0], text)
    text = PHONE_RE.sub(" ", text)
    return re.sub(r"[<>{}\[\]`|\\]", " ", text).replace(DATA_BEGIN, " ").replace(DATA_END, " ")


def sanitize_untrusted(text: str, *, single_line: bool = False) -> str:
    """Partner-supplied text with links, addresses, phone numbers and instruction-like sentences
    removed (sentence by sentence)."""
    kept = []
    for sentence in re.split(r"(?<=[.!?;\n])\s+", clean_text(text or "")):
        if not sentence.strip() or INSTRUCTION_RE.search(sentence):
            continue
        kept.append(_strip_contacts(sentence))
    return clean_text(" ".join(kept) if single_line else "\n".join(kept), single_line=single_line)


def partner_display_name(partner) -> str:
    """The name to greet, or "" when the partner's name is not usable (reads like an instruction)."""
    raw = clean_text(getattr(partner, "name", "") or "", single_line=True)
    if INSTRUCTION_RE.search(raw):
        return ""
    name = " ".join(_strip_contacts(raw).split())[:80].strip(" .,;:-")
    return name if any(ch.isalpha() for ch in name) else ""
