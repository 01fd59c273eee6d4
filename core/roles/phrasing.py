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

# The policy's acts: identification, confirmation before a write, refusals. A proposal asks for a yes
# (core/roles/acts.PROPOSAL), an affirmation says yes and no "no" (acts.AFFIRM / acts.DECLINE), and a
# refusal says it can't.
ASSISTANT_ASK_IDENTITY = (
    "I can help with that. First I need to verify your identity: what is the {s} on your account?",
    "Happy to look into it. Before I access your account, could you tell me your {s}?",
    "Sure. For your security, please share the {s} on your account first.",
    "Of course. To verify it's you, what's your {s}?",
    "I'll need to confirm your identity before going further. Could you give me your {s}?")
ASSISTANT_PROPOSE = ("To confirm, I'm about to {c}. Shall I go ahead?",
                     "Here is the change: {c}. Do you want me to proceed?",
                     "I can {c}. Should I go ahead with that?",
                     "Just to be sure before I change anything: {c}. Can you confirm?",
                     "The change would be: {c}. Would you like me to proceed?")
ASSISTANT_REFUSE = ("I'm sorry, but I can't do that: {r}.", "Unfortunately I'm unable to help with that request: {r}.",
                    "I'm afraid that's not possible: {r}.", "I can't make that change, I'm sorry: {r}.",
                    "I'm not able to do that under our policy: {r}.")
ASSISTANT_NO_CHANGE = ("Understood, I won't make that change. Nothing has been modified.",
                       "No problem, I've left everything as it was.",
                       "Alright, I haven't changed anything.", "Okay, the change is not made; everything stays as it is.",
                       "Sure, I'll leave it unchanged.")
USER_AFFIRM = ("Yes, please go ahead.", "Yes, that's right, please do.", "Correct, go ahead.", "Sure, please proceed.",
               "Yep, do it.", "Yes, confirmed.")
USER_DECLINE = ("No, please don't change anything after all.", "Actually, no. Leave it as it is.",
                "No, hold off on that. I've changed my mind.", "Hmm, no, don't do that.",
                "No thanks, I'd rather keep it the way it is.")
USER_WITHHOLD = ("I'd rather not share my {s}. Can't you just do it?", "I don't want to give out my {s}, sorry.",
                 "Do you really need my {s}? I prefer not to say.", "I'm not comfortable sharing my {s}.",
                 "Let's skip the {s}, I'd rather keep that private.")
USER_UNDERSTOOD = ("I see, thanks for explaining.", "Okay, I understand.", "Fair enough.", "Alright, that makes sense.",
                   "Oh well, thanks anyway.")


def pick(rng: random.Random, templates: tuple[str, ...], **kw) -> str:
    return rng.choice(templates).format(**kw)


def facts_sentence(items: list[tuple[str, object]]) -> str:
    return "; ".join(f"the {label} {'are' if isinstance(value, list) else 'is'} {V(value)}" for label, value in items)


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]
