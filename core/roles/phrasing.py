"""Surface realisation for the rule-based roles: several phrasings per dialogue act.

Each act has at least five templates, most of them composed (a lead-in, a body, a hand-back: every
combination is a template), so that generated dialogues are not a handful of strings. Values are
always written with `format_value`, the same function the judge and the user simulator use to check
that a fact was stated. Every template goes through one joiner (`fill`, `join`): a sentence put in
mid-sentence starts in lower case, and parts of a message are joined with one space.

A report after a write is phrased as a result ("Done: ..."); a read-only answer never opens that way.
Nothing but a proposal asks the user's leave (core/roles/acts.py): no other question here contains
"can I", "confirm", "proceed" or "go ahead".
"""

from __future__ import annotations

import random
import string
from itertools import product

from toolturn.core.judges.facts import NAMING_FIELDS, keys_of, rows
from toolturn.core.tasks.types import format_value

V = format_value


def _compose(*slots: tuple[str, ...]) -> tuple[str, ...]:
    """Every combination of one phrase per slot (a slot may offer "" to leave it out)."""
    return tuple(" ".join(p for p in combo if p) for combo in product(*slots))


USER_OPENERS = _compose(("Hi!", "Hello.", "Hey there.", "Good morning.", "Good afternoon.", "Hi there.", "Hello!",
                         "Hi, hoping you can help me out.", "Hello, I need some help.", "Hey."),
                        ("", "", "", "Quick question for you.", "I hope you can help.", "Thanks for picking this up."),
                        ("{r}",))
USER_REQUESTS = ("Could you {c}?", "I'd like you to {c}.", "Can you please {c}?", "Please {c}.",
                 "I need you to {c}.", "Would you {c}?", "Could you please {c}?", "I was hoping you could {c}.",
                 "I'd appreciate it if you could {c}.", "Would it be possible to {c}?", "If you can, please {c}.",
                 "I'd like to ask you to {c}.", "Can you {c}?", "Would you mind if I asked you to {c}?")
# a request after the previous one is answered: an acknowledgement, then the turn to the next request; once the
# user has acknowledged already (after a refusal: "Fair enough."), the turn alone (`framed`)
NEXT_TURN = ("Next, {r}", "Now {r}", "And {r}", "Also, {r}", "Then {r}", "Next up: {r}", "After that, {r}",
             "One more on this: {r}", "Following on from that, {r}", "Okay, next: {r}")
USER_NEXT = _compose(("Thanks.", "Great.", "Okay, thank you.", "Perfect.", "Good.", "Got it, thanks.", "Alright.",
                      "Thanks for that.", "Nice, thanks.", "Good to know.", "That helps.", "Understood, thanks.",
                      "Okay.", "Lovely."), NEXT_TURN + ("{r}",))
CHAIN_TURN = ("One more thing: {r}", "Also, {r}", "While I have you, {r}", "There's something else too. {r}",
              "Separately, {r}", "Since I'm here anyway, {r}", "I have another question. {r}", "On another topic, {r}",
              "Something different now: {r}", "Before I go, {r}", "I almost forgot: {r}", "Another thing, {r}",
              "While we're at it, {r}", "Oh, and {r}")
USER_CHAIN = _compose(("Thanks!", "Great, that's sorted.", "Perfect.", "Thank you.", "Good, thanks.", "Thanks.",
                       "Excellent.", "That's great, thanks.", "Brilliant.", "Okay, good."), CHAIN_TURN)
USER_INFORM = ("Sure, the {s} is {v}.", "It's {v}.", "Of course: {s} {v}.", "The {s} should be {v}.",
               "Yes, {s}: {v}.", "That would be {v}.", "My {s} is {v}.", "Here it is: {v}.", "It should be {v}.",
               "Of course, it's {v}.", "The {s}? It's {v}.", "I have it here: {v}.", "You can use {v}.",
               "Sure thing, {v}.")
USER_ACK = ("Great, thanks.", "Perfect, that's what I needed.", "Thanks, that helps.", "Got it, thank you.",
            "Okay, good to know.", "Thank you, that's clear.", "Nice, thank you.", "That's helpful, thanks.",
            "Good, that answers it.", "Thanks for checking.", "Alright, thanks.")
# asking whether a change went through, and asking for a value read out to be looked up again
USER_CONFIRM = ("Can you confirm that went through?", "Just to be sure, is that saved now?",
                "Could you double-check that it really changed?", "Can you verify it's done on your side?",
                "Before we move on, can you confirm it's recorded?", "Is that definitely done?",
                "So it's all processed now?")
USER_RECHECK = ("Could you check that once more, just to be safe?", "Really? Could you look it up again?",
                "Would you mind double-checking that?", "Can you take another look to be certain?",
                "Could you verify that again for me?", "Hmm, could you read that again from your system?")
# a customer catches a slip by what they know (what they asked with, what they were told), never by the records
USER_CORRECT = ("Hmm, that doesn't look right for the {l}. Could you check again?",
                "I don't think that's the correct {l}. Can you look again?",
                "Wait, the {l} you gave doesn't match what I have. Please re-check.",
                "That seems off for the {l}. Could you verify it?",
                "Sorry, I think the {l} is wrong. Can you double-check it?",
                "That's not the {l} I was expecting. Could you look at it again?",
                "Is that really the {l}? It doesn't match what I was told.")
USER_CLOSE = ("That solves it, thanks!", "That's everything, thank you!", "Great, that's all I needed. Thanks!",
              "Perfect, all done. Thanks for your help!", "Wonderful, that covers it. Bye!",
              "Thanks a lot, that's all for today.", "That's all, thanks so much.", "Great, have a nice day!",
              "Thank you, you've been very helpful.", "That's it from me. Thanks!", "Cheers, that's everything.")
# the goodbye after an acknowledgement in the same message ("Fair enough."): no second thank-you
USER_CLOSE_AFTER_ACK = ("That's all for today.", "Nothing else for now.", "That was my last question.",
                        "I'll leave it there.", "That's everything from me.", "That covers it.", "Bye for now.",
                        "Have a good day.")


ASK_LEAD = ("Sure, I can help with that.", "Happy to help.", "Of course.", "I can look into that.",
            "Certainly.", "Let me check that for you.", "No problem.", "Sure thing.", "Okay.", "Glad to.",
            "I'll look that up.", "Right away.", "", "")
ASSISTANT_ASK = _compose(ASK_LEAD, ("Could you give me the {s}?", "What is the {s}?", "First, I need the {s}, please.",
                          "Please share the {s}.", "What's the {s}?", "I'll need the {s} for that.",
                          "Can you tell me the {s}?", "Do you have the {s} handy?", "Which {s} is it?",
                          "Could you send me the {s}?", "I just need the {s}.", "Which {s} are we talking about?",
                          "For that I'll need the {s}.", "Mind sharing the {s}?", "What {s} do you have?",
                          "Could you pass me the {s}?", "I'm missing the {s}. What is it?",
                          "Which {s} do you mean?"))
_READ_LEAD = ("Here's what I found:", "I checked that for you:", "According to the records,", "I looked it up:",
              "From what I see here,", "Let me see. Okay,", "Thanks for waiting. So", "I have it here:",
              "Sure:", "Right,", "Good news, I found it:", "Here you go:", "Found it:", "Okay, so",
              "I've pulled it up:", "Let me read it out:", "I see that", "It looks like", "Checking now. So",
              "The system shows that", "I've got it:", "One moment. Right,", "Looking at it now,", "Alright,",
              "So,", "Let me tell you:", "In our system,", "Here are the details:", "Okay, I can see that",
              "I've looked into it:", "All right, here it is:", "Thanks for your patience:", "My screen shows that",
              "Got it. So", "Just checked:", "Here's the answer:", "From my side,", "I can tell you that",
              "Good question. So", "That's easy to check:", "Bear with me. Okay,", "Here we are:", "On file,",
              "Quick answer:", "Having checked,", "Right then:", "Happy to tell you:", "Our records say", "")
# the second answer in one message follows on from the first
_NEXT_LEAD = ("And", "Also,", "As for your other question,", "On the second point,", "Then", "Besides that,",
              "As to the rest,", "For the other part,", "In addition,", "Moving on,", "To your next question:",
              "And for the other one,", "Next:", "")
# no write verb ("set", "change", ...) in a lead: a report before a proposal in the same message must not read
# as part of the proposal (core/roles/text_user.reported)
_WRITE_LEAD = ("Done.", "All done:", "That's taken care of:", "That went through:", "It's done:",
               "Finished.", "That worked:", "All done.", "You're all sorted:", "Completed:", "That's done now:",
               "It's been processed:", "Taken care of.", "Success:", "There we go:", "That's sorted:",
               "Okay, that's through:", "Everything went fine:", "It's all handled:", "Great, it's done:",
               "That's complete:", "Job done:", "Your request went through:", "Okay, done:", "That's finished:",
               "Great news, it worked:")
ASSISTANT_REPORT = _compose(_READ_LEAD, ("{f}.",))
ASSISTANT_REPORT_NEXT = _compose(_NEXT_LEAD, ("{f}.",))
ASSISTANT_REPORT_WRITE = _compose(_WRITE_LEAD, ("{f}.",))
# after a message's last answer, now and then, the turn handed back (no name of a slot: it asks for nothing)
ASSISTANT_HANDBACK = ("Anything else I can look up?", "Is there anything else?", "Anything else you need from me?",
                      "Anything else today?", "I'm here if you need more.", "Happy to help with anything else.",
                      "Is there something more I can check?", "Anything more on your list?", "What's next?",
                      "Just say if you need more.", "Hope that helps.", "Glad I could sort that out.",
                      "Is that everything?", "Need anything else?", "Hope that answers it.", "Any other questions?")
# an answer that names the record it is about ("For order ORD-1, ..."): {k} is the slot and its value
ASSISTANT_ANCHOR = ("For {k},", "On {k}:", "Looking at {k},", "About {k}:", "As for {k},", "I have {k} here:",
                    "Regarding {k},", "Checking {k}:", "So for {k},", "I pulled up {k}:", "With {k},")
ASSISTANT_ERROR = ("I couldn't find that: the system says \"{e}\". I looked up {k}. Could you double-check it?",
                   "Sorry, there is no match. I searched for {k} and got: \"{e}\".",
                   "That lookup failed for {k} (\"{e}\"). Maybe the number is different?",
                   "I'm afraid nothing was found for {k}. The system returned \"{e}\".",
                   "No record came back for {k}; the error was \"{e}\".",
                   "Hmm, {k} gives me an error: \"{e}\". Is that the right one?")
# a value looked up again on the user's request; a change the user asks about, answered from its own result
ASSISTANT_CONFIRM = _compose(("Yes, I re-checked:", "I verified it again:", "Double-checked:",
                              "I looked once more, and", "Checked again:", "I ran it again:", "Looking again,"),
                             ("{f}.",))
ASSISTANT_CONFIRM_WRITE = _compose(("Yes, it went through:", "Yes, it's recorded:", "It's saved:",
                                    "Confirmed, it's in the system:", "Yes, that's done:", "It is on record:",
                                    "Yes, all processed:"), ("{f}.",))
ASSISTANT_FIX = ("You're right, my apologies. {F}.", "Sorry about that, I misread it. {F}.",
                 "Thanks for catching that. Corrected: {f}.", "Apologies, let me correct myself: {f}.",
                 "My mistake. The right value: {f}.", "Good catch, I read that wrong. {F}.",
                 "You're correct, I'm sorry. Looking properly, {f}.")

# The policy's acts: identification, confirmation before a write, refusals. A proposal asks for a yes
# (core/roles/acts.PROPOSAL), an affirmation says yes and no "no" (acts.AFFIRM / acts.DECLINE), and a
# refusal says it can't.
IDENTITY_LEAD = ("I can help with that.", "Happy to look into it.", "Sure.", "Of course.", "Glad to help.",
                 "Sure thing.", "I'd be glad to.", "Okay.", "Absolutely.", "")
ASSISTANT_ASK_IDENTITY = _compose(
    IDENTITY_LEAD,
    ("First I need to verify your identity: what is the {s} on your account?",
     "Before I access your account, could you tell me your {s}?",
     "For your security, please share the {s} on your account first.",
     "To verify it's you, what's your {s}?",
     "I'll need to verify your identity before going further. Could you give me your {s}?",
     "Which {s} is on the account?", "Could you tell me the {s} you registered with?",
     "To find your account, I need your {s}.", "What {s} did you sign up with?",
     "Let's start by finding your account: what's the {s}?", "Could I have the {s} on file for you?",
     "I'll just need to confirm who you are. What's your {s}?", "Security first: which {s} is on the account?",
     "So I can pull up your account, what's the {s}?", "Could you start with your {s}, for verification?"))
ASSISTANT_PROPOSE = _compose(
    ("", "", "", "Thanks.", "Okay.", "I have everything I need.", "Alright.", "Got it.", "Thanks for that.",
     "Right.", "Perfect.", "Understood."),
    ("To confirm, I'm about to {c}.", "Here is the change: {c}.", "I can {c}.",
     "Just to be sure before I change anything: I would {c}.", "The next step would be to {c}.",
     "So I'll {c}.", "What I'd do is {c}.", "This is what I'd do: {c}.", "What I have in mind is to {c}.",
     "Here's what happens next: I {c}.", "Before I do anything: I'm going to {c}.", "In short, I'd {c}.",
     "I'm ready to {c}.", "Let me spell it out: I'll {c}."),
    ("Shall I go ahead?", "Do you want me to proceed?", "Should I go ahead with that?", "Can you confirm?",
     "Would you like me to proceed?", "Okay to go ahead?", "Is that right?", "Shall I do that?",
     "Do you want me to go ahead?", "Should I proceed?", "Okay to proceed?", "May I go ahead?",
     "Is that correct?", "Want me to do that?"))
ASSISTANT_REFUSE = _compose(
    ("I'm sorry, but I can't do that: {r}.", "Unfortunately I'm unable to help with that request: {r}.",
     "I'm afraid that's not possible: {r}.", "I can't make that change, I'm sorry: {r}.",
     "I'm not able to do that under our policy: {r}.", "That's something I can't do, because {r}.",
     "I checked, and I can't do that: {r}.", "Sorry, that isn't possible: {r}.",
     "I wish I could help, but I can't: {r}.", "Our policy means I can't do that: {r}.",
     "I'm unable to go through with that: {r}.", "I'm afraid I can't do that one: {r}.",
     "That's not allowed, so I can't do it: {r}.", "I can't help with that, unfortunately: {r}.",
     "Sadly, that can't be done: {r}."),
    ("", "", "I understand it's frustrating.", "Sorry I can't be more helpful there.",
     "Let me know if there's anything else.", "I hope you understand.", "Is there anything else I can do?",
     "I'm sorry about that.", "Apologies for the inconvenience.", "If something else comes up, I'm here."))
ASSISTANT_NO_CHANGE = _compose(
    ("Understood.", "No problem.", "Alright.", "Okay.", "Sure.", "Of course.", "Fine.", "That's okay."),
    ("I won't make that change. Nothing has been modified.", "I've left everything as it was.",
     "I haven't changed anything.", "The change is not made; everything stays as it is.",
     "I'll leave it unchanged.", "Nothing was touched.", "It stays exactly as it was.",
     "I've made no changes."))
USER_AFFIRM = ("Yes, please go ahead.", "Yes, that's right, please do.", "Correct, go ahead.", "Sure, please proceed.",
               "Yep, do it.", "Yes, confirmed.", "Yes please.", "Go ahead, thanks.", "Yes, that's what I want.",
               "Sounds good, yes.", "Absolutely, go ahead.", "Okay, please do that.")
USER_DECLINE = ("No, please don't change anything after all.", "Actually, no. Leave it as it is.",
                "No, hold off on that. I've changed my mind.", "Hmm, no, don't do that.",
                "No thanks, I'd rather keep it the way it is.", "On second thought, no. Let's not.",
                "No, I'll keep it as it is for now.", "Actually, don't. I've decided against it.")
USER_WITHHOLD = ("I'd rather not share my {s}. Can't you just do it?", "I don't want to give out my {s}, sorry.",
                 "Do you really need my {s}? I prefer not to say.", "I'm not comfortable sharing my {s}.",
                 "Let's skip the {s}, I'd rather keep that private.", "I'd prefer to keep my {s} to myself.")
# after declining a change the assistant then left alone: no "thanks for explaining"
USER_KEPT = ("Okay, thanks.", "Good, thank you.", "Thanks for leaving it.", "Alright, thank you.", "Fine, thanks.",
             "Great, let's keep it that way.")
USER_UNDERSTOOD = ("I see, thanks for explaining.", "Okay, I understand.", "Fair enough.", "Alright, that makes sense.",
                   "Oh well, thanks anyway.", "That's a shame, but okay.", "Understood.", "Okay, I get it.")


# the placeholders that take a whole sentence (a request): in lower case when put mid-sentence
_SENTENCE_FIELDS = frozenset({"r"})
_KEEP_CAPITAL = ("I", "I'd", "I'm", "I'll", "I've")


def pick(rng: random.Random, templates: tuple[str, ...], **kw) -> str:
    return fill(rng.choice(templates), **kw)


def fill(template: str, **kw) -> str:
    """`template` with its placeholders filled: a value that starts a sentence starts with a capital, and a
    sentence put after a comma, a colon or a word starts in lower case ("While I have you, could you ...",
    never "..., Could you ...")."""
    out = ""
    for literal, field, _, _ in string.Formatter().parse(template):
        out += literal
        if field is None:
            continue
        value = str(kw[field])
        if not out.strip() or out.rstrip().endswith((".", "!", "?")):
            value = capitalize(value)  # a value that starts a sentence
        elif field in _SENTENCE_FIELDS:
            first = value.split(" ", 1)[0]
            if first not in _KEEP_CAPITAL and first[:1].isupper() and first[1:].islower():
                value = value[:1].lower() + value[1:]
        out += value
    return out


def join(parts: list[str]) -> str:
    """The parts of one message, one space between them."""
    return " ".join(p.strip() for p in parts if p and p.strip())


def framed(rng: random.Random, frame: tuple[str, ...], parts: list[str], request: str,
           acknowledgements: tuple[str, ...]) -> str:
    """`request` in a frame of USER_NEXT or USER_CHAIN, without a second acknowledgement after one in `parts`."""
    if parts and parts[-1] in acknowledgements and frame in (USER_NEXT, USER_CHAIN):
        frame = NEXT_TURN if frame == USER_NEXT else CHAIN_TURN
    return pick(rng, frame, r=request)


def closing(rng: random.Random, parts: list[str], acknowledgements: tuple[str, ...]) -> str:
    """The user's last message: what they still had to say, then a goodbye that does not thank twice."""
    acked = bool(parts) and parts[-1] in acknowledgements
    return join(parts + [pick(rng, USER_CLOSE_AFTER_ACK if acked else USER_CLOSE)])


_FACT = ("the {l} {be} {v}", "the {l} {be} {v}", "the {l} {be} listed as {v}", "the records give {v} for the {l}",
         "the {l} {be} currently {v}", "the {l} shows {v}", "for the {l}, I see {v}", "the {l} comes up as {v}",
         "as for the {l}, {be_it} {v}")
# how the last of several values joins the others
_LAST = ("; ", " and ", ", and ", ", while ", ". Also, ", "; also, ", ", plus ", ". And ")


def facts_sentence(items: list[tuple[str, object]], rng: random.Random | None = None,
                   forms: dict[str, list[str]] | None = None) -> str:
    """The reported values in one sentence; with `rng`, each in one of several forms: the domain's own for
    its label (`forms`, core/domains/<name>/phrasing.py) or generic ones, and joined in one of several ways."""
    said = []
    for label, value in items:
        form = _FACT[0] if rng is None else rng.choice((forms or {}).get(label) or _FACT)
        plural = isinstance(value, list)
        said.append(form.format(l=label, v=V(value), be="are" if plural else "is",
                                be_it="they're" if plural else "it's"))
    if len(said) < 2:
        return "".join(said)
    last = "; " if rng is None else rng.choice(_LAST)
    return ", ".join(said[:-1]) + last + said[-1]


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def name_of(param: str, value, said: list, results) -> str:
    """An argument value in the customer's terms: as they said it, else by the name of its row, never a bare
    internal id they did not give (an enum value reads as words: changed_mind -> changed mind)."""
    if value in said:
        return V(value)
    keys = keys_of(param)
    for row in rows(results):
        if any(row.get(k) == value for k in keys):
            name = next((row[n] for n in NAMING_FIELDS if n not in keys and isinstance(row.get(n), str)), None)
            if name:
                return name
    return V(value).replace("_", " ") if isinstance(value, str) else V(value)


def change(template: str, args: dict, said: list, results, terms: dict | None = None) -> str:
    """A domain's wording of a change (core/domains/<name>/phrasing.py): arguments named as the customer
    knows them, the domain's terms of the change (`terms`: a price difference, a refund) as given, any other
    placeholder read from the task's earlier results."""
    found = rows(results)
    values = {}
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None or field in values:
            continue
        if field in args:
            values[field] = name_of(field, args[field], said, results)
        elif terms and field in terms:
            values[field] = terms[field]
        else:
            values[field] = V(next((r[field] for r in found if field in r), "?"))
    return template.format(**values)
