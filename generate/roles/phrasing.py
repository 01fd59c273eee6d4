"""Surface realisation for the rule-based roles: several phrasings per dialogue act.

Each act has at least five templates so that generated dialogues are not identical strings. Values
are always written with `format_value`, the same function the judge and the user simulator use to
check that a fact was stated.
"""

from __future__ import annotations

import random

from toolturn.core.types import Subtask, Task, format_value

V = format_value

USER_OPENERS = ("Hi! {r}", "Hello, I need some help. {r}", "Hey there. {r}", "Good morning. {r}",
                "Hi, hoping you can help me out. {r}", "Hello! {r}")
USER_REQUESTS = ("Could you {c}?", "I'd like you to {c}.", "Can you please {c}?", "Please {c}.",
                 "I need you to {c}.", "Would you {c}?")
USER_NEXT = ("Thanks. Next, {r}", "Great. Now {r}", "Okay, thank you. {r}", "Perfect. {r}", "Good. {r}",
             "Got it, thanks. {r}")
USER_CHAIN = ("Thanks! One more thing: {r}", "Great, that's sorted. Also, {r}",
              "Perfect. While I have you, {r}", "Thank you. There's something else too. {r}",
              "Good, thanks. Separately, {r}")
USER_INFORM = ("Sure, the {s} is {v}.", "It's {v}.", "Of course: {s} {v}.", "The {s} should be {v}.",
               "Yes, {s}: {v}.", "That would be {v}.")
USER_ACK = ("Great, thanks.", "Perfect, that's what I needed.", "Thanks, that helps.", "Got it, thank you.",
            "Okay, good to know.", "Thank you, that's clear.")
USER_CONFIRM = ("Can you confirm that went through?", "Just to be sure, is that saved now?",
                "Could you double-check that it really changed?", "Can you verify it's done on your side?",
                "Before we move on, can you confirm it's recorded?")
USER_CORRECT = ("Hmm, that doesn't look right for the {l}. Could you check again?",
                "I don't think that's the correct {l}. Can you look again?",
                "Wait, the {l} you gave doesn't match the records. Please re-check.",
                "That seems off for the {l}. Could you verify it?",
                "Sorry, I think the {l} is wrong. Can you double-check it?")
USER_CLOSE = ("That solves it, thanks!", "That's everything, thank you!", "Great, that's all I needed. Thanks!",
              "Perfect, all done. Thanks for your help!", "Wonderful, that covers it. Bye!",
              "Thanks a lot, that's all for today.")

ASSISTANT_ASK = ("Sure, I can help with that. Could you give me the {s}?",
                 "Happy to help. What is the {s}?", "Of course. First, I need the {s}, please.",
                 "I can look into that. Which {s} should I use?", "Certainly. Please share the {s}.")
ASSISTANT_REPORT = ("Here's what I found: {f}.", "I checked that for you: {f}.", "Done. {F}.",
                    "According to the records, {f}.", "All set: {f}.")
ASSISTANT_ERROR = ("I couldn't find that: the system says \"{e}\". I looked up {k}. Could you double-check it?",
                   "Sorry, there is no match. I searched for {k} and got: \"{e}\".",
                   "That lookup failed for {k} (\"{e}\"). Maybe the number is different?",
                   "I'm afraid nothing was found for {k}. The system returned \"{e}\".",
                   "No record came back for {k}; the error was \"{e}\".")
ASSISTANT_CONFIRM = ("Yes, I re-checked: {f}.", "Confirmed: {f}.", "I verified it again: {f}.",
                     "Yes, it's recorded: {f}.", "Double-checked: {f}.")
ASSISTANT_FIX = ("You're right, my apologies. {F}.", "Sorry about that, I misread it. {F}.",
                 "Thanks for catching that. Corrected: {f}.", "Apologies, let me correct myself: {f}.",
                 "My mistake. The right value: {f}.")


def pick(rng: random.Random, templates: tuple[str, ...], **kw) -> str:
    return rng.choice(templates).format(**kw)


def slot_label(slot: str, entity: str) -> str:
    """'customer email' -> 'email' when the entity is already named in the sentence."""
    return slot[len(entity) + 1:] if slot.startswith(entity + " ") else slot


def _fields(st: Subtask) -> str:
    labels = [r.label for r in st.report]
    return " and ".join(labels) if labels else "details"


def clause(st: Subtask, task: Task, reveal_ids: bool) -> str:
    """The verb phrase asking for one subtask; identifiers are included only when revealed."""
    e = st.entity
    ids = ", ".join(f"{slot_label(s, e)} {V(task.facts[s])}" for s in st.id_slots)
    who = f"the {e} with {ids}" if reveal_ids and ids else f"my {e}"
    values = ", ".join(f"{slot_label(s, 'new')} {V(task.facts[s])}".replace(" for the new record", "")
                       for s in st.value_slots)
    d = st.detail
    return {
        "lookup": lambda: f"tell me the {_fields(st)} of {who}",
        "find": lambda: f"find {who} and tell me its {_fields(st)}",
        "missing": lambda: f"look up {who}",
        "summary": lambda: f"tell me how many {e} records have {d.get('group')} {V(d.get('value'))}",
        "parent": lambda: f"tell me the {_fields(st)} of the {e} linked to {d.get('of', 'it')}",
        "related": lambda: f"list the {e} linked to it",
        "update": lambda: f"change the {d.get('field')} of {e} {d.get('key')} to {values}",
        "create": lambda: f"add a new {e} for it with {values}",
        "delete": lambda: f"delete {e} {d.get('key')}",
        "verify": lambda: (f"check {e} {d['key']} again and tell me the {d['field']} now" if "field" in d
                           else f"tell me how many {e} records it has now"),
    }[st.kind]()


def describe_goal(task: Task) -> str:
    """Declarative statement of the user's objective: what they know, what must be looked up (or
    changed) with tools, and what must be communicated back."""
    parts = [clause(st, task, reveal_ids=True) for st in task.subtasks]
    known = ", ".join(f"{s} = {V(v)}" for s, v in task.facts.items())
    tools = ", ".join(dict.fromkeys(s.tool for s in task.steps))
    told = ", ".join(dict.fromkeys(r.label for st in task.subtasks for r in st.report))
    return (f"You want the assistant to {'; then '.join(parts)}. You know: {known or 'nothing specific'}. "
            f"To be looked up or changed with tools: {tools}. To be told back: {told or 'the outcome'}.")


def facts_sentence(items: list[tuple[str, object]]) -> str:
    return "; ".join(f"the {label} {'are' if isinstance(value, list) else 'is'} {V(value)}" for label, value in items)


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]
