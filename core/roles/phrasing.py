"""Surface realisation for the rule-based roles: several phrasings per dialogue act.

Each act has at least five templates so that generated dialogues are not identical strings. Values
are always written with `format_value`, the same function the judge and the user simulator use to
check that a fact was stated.
"""

from __future__ import annotations

import random

from toolturn.core.tasks.types import format_value

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


def facts_sentence(items: list[tuple[str, object]]) -> str:
    return "; ".join(f"the {label} {'are' if isinstance(value, list) else 'is'} {V(value)}" for label, value in items)


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]
