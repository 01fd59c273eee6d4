"""Dialogue acts read from free text, one test each, shared by every reader: the policy checker (is
there a confirmation request before a write, a yes after it?), the text user (does the assistant
propose an action?) and the text-only oracle in evaluation (did the user say yes?). The rule-based
roles' phrasings are written to pass these same tests (`core/roles/phrasing.py`)."""

from __future__ import annotations

import re

# Asking the user's leave: "Shall I go ahead?", "Is that correct?", "Would you like me to cancel it?"
PROPOSAL = re.compile(r"\b(shall i|should i|do you want me to|would you like me to|want me to|may i|can i|"
                      r"okay to|ok to|proceed|go ahead|confirm|is that right|is that correct)\b", re.IGNORECASE)
AFFIRM = re.compile(r"\b(yes|yeah|yep|sure|correct|confirm(ed)?|go ahead|please do|proceed|do it|"
                    r"that's right|that is right|ok(ay)?|absolutely)\b", re.IGNORECASE)
DECLINE = re.compile(r"\b(no|nope|don't|do not|not now|never ?mind|hold off|stop|wait)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"[^.?!\n]+[.?!]*")


def sentences(text: str) -> list[str]:
    """`text` cut after each '.', '?' or '!' and at line ends."""
    return _SENTENCE.findall(text)


def is_proposal(sentence: str) -> bool:
    """A question asking the user's leave for an action."""
    return sentence.rstrip().endswith("?") and PROPOSAL.search(sentence) is not None


def asks_confirmation(text: str) -> bool:
    """Some sentence of `text` asks the user's leave for an action."""
    return any(is_proposal(s) for s in sentences(text))


def is_affirmation(text: str) -> bool:
    """A yes, and no "no" anywhere in it."""
    return AFFIRM.search(text) is not None and DECLINE.search(text) is None
