"""A deterministic rule-based user that reads the assistant's *text* (and tool results), so it can face
any assistant, an LLM included. Evaluation uses it; the agenda user (dialogue acts) stays for generation.

It holds an agenda (each task's subtasks, in order) and each turn
- answers the assistant's questions for identifiers it holds, detected in the text ("what is the
  customer email?", "your e-mail, please"), and refuses to give one its task withholds (a customer
  who will not identify),
- confirms a proposed change that states the values the change takes from its request, corrects one
  that does not, and declines one its task says to decline,
- marks a requested subtask done once every fact it expects was reported since the request (whole-token,
  number-normalised matching, the judge's test; a change also needs a successful write in the tool
  results, a declined change the user's no, a request the policy forbids a refusal in words), and
  gives feedback when some are still missing,
- repeats a request in other words, identifiers included, when the reply does not address it,
- reveals the next one or two subtasks, chains the next task, and closes once every task is done: all its
  subtasks, and the database where the task's gold plan leaves it (`state_ok`, the judge's end-state test),
- gives up after `max_stall_turns` turns in a row without progress.
Every turn is either progress (a new fact, identifier, confirmation, subtask or task, each counted once)
or a stalled turn, so an episode always ends. It never fails on a reply it does not understand.

It also emits the dialogue acts of its turns (`UserTurn.acts`), which an oracle assistant may read; it
never reads the assistant's acts itself.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from toolturn.core.episode import EpisodeState, UserTurn
from toolturn.core.judges.execution import REFUSAL_CUE
from toolturn.core.judges.facts import mentions
from toolturn.core.judges.structural import is_error
from toolturn.core.roles import phrasing as P
from toolturn.core.roles.acts import PROPOSAL, is_proposal, sentences
from toolturn.core.tasks.types import Subtask, Task, format_value
from toolturn.core.tasks.wording import clause

WRITE_KINDS = ("update", "create", "delete")

NOT_HELD = ("I'm not sure I have that. {r}", "I don't have that to hand, sorry. {r}",
            "Hmm, I can't tell you that. {r}", "I don't think I know that. {r}", "Sorry, I don't have that. {r}")
STILL_NEED = ("Thanks, but I still need the {l}.", "Okay, and what is the {l}?", "Could you also tell me the {l}?",
              "That helps, but I'm still missing the {l}.", "Thanks. What about the {l}?")
NOT_SAVED = ("It doesn't look like the change went through. Could you make it, please?",
             "Hmm, I don't think that's been done yet. Can you do it?",
             "My account doesn't seem to show that yet. Could you please make the change?",
             "I don't see that change on my side. Could you apply it?",
             "That doesn't seem to have been recorded. Please make the change.")
UNWANTED = ("Wait, it looks like something was changed that I didn't ask for. Could you put it back?",
            "Hmm, I didn't ask for any change to the records. Please undo it.",
            "I only wanted information, not changes. Can you revert that?",
            "Something in my records changed that shouldn't have. Could you fix that?",
            "Please don't change anything I didn't ask for. Can you undo it?")
NO_CHANGE = ("No, please don't change anything there.", "No, I didn't ask for that change.",
             "Please don't, that's not what I want.", "No thanks, leave that as it is.",
             "No, I don't want that changed.")
WRONG_VALUE = ("No, the {s} should be {v}.", "Not quite: the {s} is {v}.", "Please use {v} as the {s}.",
               "That's not right, I need the {s} to be {v}.", "No, make the {s} {v}, please.")
NOT_NEEDED = ("No need, thanks.", "No, that's fine.", "That's not necessary, thank you.", "No thanks.",
              "I don't need that, thanks.")
GIVE_UP = ("Never mind, I'll sort this out another time. Thanks.", "Okay, let's leave it there. Goodbye.",
           "I don't think we're getting anywhere; I'll try later. Bye.", "Forget it, thanks anyway.",
           "Let's stop here. Thanks for trying.")

# a request phrase: words that ask the user for something; "share", "provide" only as verbs with an object, "what is",
# "which" only opening the sentence, so that a statement ("you're on the Family Share 50 plan", "the Smart Jeans, which
# costs 3") or a closing offer ("let me know if there's anything else") is no request
_REQUEST = re.compile(r"\b(please|could you|can you|would you|may i|i need|i'll need|i will need|tell me|"
                      r"let me know(?! if)|give me|(?:provide|share|send) (?:me |us )?(?:the|your|it|that|them)\b)|"
                      r"^(?:(?:okay|ok|so|and|now|sure|thanks|great|alright|right),?\s+)?(?:what is|what's|which)\b")
_WRITE_VERB = re.compile(r"\b(update|change|set|modify|delete|remove|cancel|create|add|insert|save)\b")


def _normalise(text: str) -> str:
    return re.sub(r"\be-mail\b", "email", text.lower().replace("_", " "))


def questions(text: str) -> list[str]:
    """The sentences of `text` that ask the user something (a question mark or a request phrase)."""
    out = []
    for sentence in sentences(text):
        sentence = sentence.strip()
        if sentence.endswith("?") or _REQUEST.search(_normalise(sentence)):
            out.append(sentence)
    return out


def proposes(text: str) -> bool:
    """Whether `text` asks the user's leave for an action ("..., method cash. Shall I go ahead?")."""
    return any(is_proposal(q) for q in questions(text))


def reported(messages: list[dict], since: int) -> str:
    """What the assistant reported since message `since`: its replies without their questions and, in a
    reply that proposes an action, without the proposal (a change only proposed has not been made). A
    proposal ends its message, so what precedes its first sentence naming a change is a report."""
    out = []
    for m in messages[since:]:
        text = m.get("content") or "" if m["role"] == "assistant" else ""
        proposal = bool(text) and proposes(text)
        kept = []
        for sentence in sentences(text):
            if proposal and (_WRITE_VERB.search(sentence.lower()) or PROPOSAL.search(sentence)):
                break
            if not sentence.rstrip().endswith("?"):
                kept.append(sentence)
        out.append("".join(kept))
    return "\n".join(out)


def writes(st: Subtask) -> bool:
    """Whether the subtask asks for a change (a schema write, or a service task's action, declined or not)."""
    return st.kind in WRITE_KINDS or "write" in st.detail or "proposal" in st.detail


def change_slots(task: Task, st: Subtask) -> list[str]:
    """The slots the user stated whose values the subtask's change takes verbatim: what a proposal of
    that change must state."""
    steps = [st.detail["write"]] if "write" in st.detail else st.steps if st.kind in WRITE_KINDS else []
    return [a["$fact"] for k in steps for a in task.steps[k].args.values()
            if isinstance(a, dict) and "$fact" in a and a["$fact"] in task.facts]


def _says(sentence: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(_normalise(phrase))}(?!\w)", _normalise(sentence)) is not None


@dataclass
class TextUserBehaviour:
    reveal_per_turn: tuple[int, int] = (1, 2)  # subtasks revealed per turn
    withhold_ids: float = 0.5  # probability of withholding a subtask's identifiers until asked
    max_stall_turns: int = 3  # give up after this many turns in a row without progress
    feedback: bool = True  # acknowledge results before the next request


class TextUser:
    name = "rule:text"

    def __init__(self, tasks: list[Task], rng: random.Random, behaviour: TextUserBehaviour,
                 state_ok: Callable[[int], bool] | None = None):
        """`state_ok(k)`: whether the database is where task k's gold plan leaves it (None: not checked)."""
        self.tasks, self.rng, self.b, self.state_ok = tasks, rng, behaviour, state_ok
        self.task_index, self.next_subtask = 0, 0
        self.open: dict[tuple[int, int], int] = {}  # (task, subtask) -> message index of its request
        self.done: set[tuple[int, int]] = set()
        self.tasks_done = [False] * len(tasks)
        self.told: set[tuple[int, str]] = set()  # identifiers given, per task
        self.seen: set[tuple[int, int, int]] = set()  # (task, subtask, report item) stated so far
        self.confirmed: set[tuple[int, int]] = set()  # changes the user said yes (or, when declining, no) to
        self.withheld: set[tuple[int, str]] = set()  # identifiers refused when asked
        self.stall = 0
        self.started = False
        self.outcome: str | None = None  # "done" | "gave_up" once the user has ended the episode

    def completed(self, task_index: int) -> bool:
        return self.tasks_done[task_index]

    async def respond(self, state: EpisodeState) -> UserTurn:
        if not self.started:
            self.started = True
            return self._reveal(P.USER_OPENERS, [], [], len(state.messages))
        last = state.messages[-1] if state.messages else {}
        text = (last.get("content") or "") if last.get("role") == "assistant" else ""
        parts: list[str] = []
        acts: list[dict] = []
        new_ids = self._answer_questions(text, parts, acts)
        answered = bool(parts)
        progress = self._review(state, parts) | new_ids
        if not answered and self._answer_proposal(text, parts):
            progress = True
        if self.open:
            if not parts:
                self._follow_up(text, parts, acts)
            return self._turn(progress, parts, acts)
        task = self.tasks[self.task_index]
        if self.next_subtask < len(task.subtasks):
            return self._reveal(P.USER_NEXT if self.b.feedback else None, parts, acts, len(state.messages))
        if self.state_ok is not None and not self.state_ok(self.task_index):
            wanted = any(writes(st) and not st.detail.get("decline") for st in task.subtasks)
            parts.append(P.pick(self.rng, NOT_SAVED if wanted else UNWANTED))
            return self._turn(progress, parts, acts)
        self.tasks_done[self.task_index] = True
        self.stall = 0
        if self.task_index + 1 < len(self.tasks):
            self.task_index, self.next_subtask = self.task_index + 1, 0
            return self._reveal(P.USER_CHAIN if self.b.feedback else None, parts, acts, len(state.messages))
        self.outcome = "done"
        return UserTurn(P.closing(self.rng, parts, P.USER_UNDERSTOOD + P.USER_ACK), True, acts + [{"act": "bye"}])

    # ---- reading the assistant ------------------------------------------------------------------
    def _held(self) -> list[tuple[int, str]]:
        """Facts the user knows so far (current and earlier tasks), newest task first."""
        return [(ti, slot) for ti in range(self.task_index, -1, -1) for slot in self.tasks[ti].facts]

    def _answer_questions(self, text: str, parts: list[str], acts: list[dict]) -> bool:
        """Give every held fact the assistant asks for, refuse the ones the task withholds. True when a new
        identifier was given or refused."""
        new = False
        if proposes(text):  # a proposal asks for a yes, not for facts ("... to the Family Share 50 plan. Shall I?")
            return new
        asked: dict[str, int] = {}
        withheld = {s: ti for ti, si in self.open for s in self.tasks[ti].subtasks[si].detail.get("withhold", [])}
        for sentence in questions(text):
            for slot, ti in withheld.items():
                if _says(sentence, slot) and (ti, slot) not in self.withheld:
                    self.withheld.add((ti, slot))
                    parts.append(P.pick(self.rng, P.USER_WITHHOLD, s=slot))
                    acts.append({"act": "withhold", "task": ti, "slot": slot})
                    new = True
            matched = [(ti, s) for ti, s in self._held() if _says(sentence, s) and s not in asked]
            if not matched:  # "your e-mail?", "the ID, please": the slot's last word
                matched = [(ti, s) for ti, s in self._held() if _says(sentence, s.split()[-1]) and s not in asked]
            for ti, slot in matched:
                asked.setdefault(slot, ti)
        for slot, ti in asked.items():
            value = self.tasks[ti].facts[slot]
            parts.append(P.pick(self.rng, P.USER_INFORM, s=slot, v=format_value(value)))
            acts.append({"act": "inform", "task": ti, "slot": slot, "value": value})
            new |= (ti, slot) not in self.told
            self.told.add((ti, slot))
        return new

    def _review(self, state: EpisodeState, parts: list[str]) -> bool:
        """Mark open subtasks done whose facts were all stated since their request, and what else they
        need happened: a change written, a declined change declined, a forbidden request refused (which
        the user accepts in words). True on progress."""
        progress = False
        for key, since in list(self.open.items()):
            said = reported(state.messages, since)
            st = self.tasks[key[0]].subtasks[key[1]]
            stated = {(*key, i) for i, item in enumerate(st.report) if mentions(said, item.expected)}
            progress |= bool(stated - self.seen)
            self.seen |= stated
            if st.detail.get("decline"):
                settled = key in self.confirmed
            elif st.kind == "refuse":
                settled = REFUSAL_CUE.search(said) is not None
            else:
                settled = not writes(st) or self._wrote(state.messages, since, key)
            if len(stated) == len(st.report) and settled:
                del self.open[key]
                self.done.add(key)
                progress = True
                if st.kind == "refuse":
                    parts.append(P.pick(self.rng, P.USER_UNDERSTOOD))
        return progress

    def _wrote(self, messages: list[dict], since: int, key: tuple[int, int]) -> bool:
        """A change is done only when a tool result since its request shows the write succeeded (its
        values may already have been read out by another subtask's report)."""
        task = self.tasks[key[0]]
        tools = {task.steps[k].tool for k in task.subtasks[key[1]].steps}
        return any(m["role"] == "tool" and m.get("name") in tools and not is_error(m.get("content") or "")
                   for m in messages[since:])

    def _answer_proposal(self, text: str, parts: list[str]) -> bool:
        """Confirm or decline a proposed action; True the first time a subtask's action is confirmed."""
        if not proposes(text):
            return False
        proposal = text.lower()
        changes = [k for k in self.open if writes(self.tasks[k[0]].subtasks[k[1]])]
        if _WRITE_VERB.search(proposal):
            if not changes:
                parts.append(P.pick(self.rng, NO_CHANGE))
                return False
            key = changes[0]
        elif self.open:
            key = next(iter(self.open))
        else:
            parts.append(P.pick(self.rng, NOT_NEEDED))
            return False
        task = self.tasks[key[0]]
        if task.subtasks[key[1]].detail.get("decline"):  # the task says the user turns this change down
            parts.append(P.pick(self.rng, NO_CHANGE))
            return key not in self.confirmed and not self.confirmed.add(key)
        wrong = next((s for s in change_slots(task, task.subtasks[key[1]]) if not mentions(proposal, task.facts[s])),
                     None)
        if wrong is not None:
            parts.append(P.pick(self.rng, WRONG_VALUE, s=wrong, v=format_value(task.facts[wrong])))
            return False
        parts.append(P.pick(self.rng, P.USER_AFFIRM))
        new = key not in self.confirmed
        self.confirmed.add(key)
        return new

    # ---- speaking -------------------------------------------------------------------------------
    def _follow_up(self, text: str, parts: list[str], acts: list[dict]) -> None:
        """The reply did not address what is outstanding: ask for what is missing, or ask again in other
        words with the identifiers (saying so when the assistant asked for something the user lacks)."""
        key = next(iter(self.open))
        task, st = self.tasks[key[0]], self.tasks[key[0]].subtasks[key[1]]
        missing = [item for i, item in enumerate(st.report) if (*key, i) not in self.seen]
        if self.b.feedback and missing and len(missing) < len(st.report):
            parts.append(P.pick(self.rng, STILL_NEED, l=missing[0].label))
            return
        request = P.pick(self.rng, P.USER_REQUESTS, c=clause(st, task, reveal_ids=True))
        unknown = any(_REQUEST.search(_normalise(q)) for q in questions(text))
        parts.append(P.pick(self.rng, NOT_HELD, r=request) if unknown else request)
        acts.append({"act": "request", "task": key[0], "subtask": key[1],
                     "ids": list(st.id_slots) + list(st.value_slots)})

    def _turn(self, progress: bool, parts: list[str], acts: list[dict]) -> UserTurn:
        self.stall = 0 if progress else self.stall + 1
        if self.stall >= self.b.max_stall_turns:
            self.outcome = "gave_up"
            return UserTurn(P.pick(self.rng, GIVE_UP), True, acts + [{"act": "bye"}])
        return UserTurn(P.join(parts), False, acts)

    def _reveal(self, frame: tuple[str, ...] | None, parts: list[str], acts: list[dict], at: int) -> UserTurn:
        """Reveal the next one or two subtasks; `frame` wraps the request (opener, feedback)."""
        task = self.tasks[self.task_index]
        k = min(len(task.subtasks) - self.next_subtask, self.rng.randint(*self.b.reveal_per_turn))
        clauses = []
        for si in range(self.next_subtask, self.next_subtask + k):
            st = task.subtasks[si]
            reveal = self.rng.random() >= self.b.withhold_ids
            clauses.append(clause(st, task, reveal_ids=reveal))
            acts.append({"act": "request", "task": self.task_index, "subtask": si,
                         "ids": (list(st.id_slots) if reveal else []) + list(st.value_slots)})
            self.told |= {(self.task_index, s) for s in st.value_slots + (st.id_slots if reveal else [])}
            self.open[(self.task_index, si)] = at
        self.next_subtask += k
        self.stall = 0
        request = P.pick(self.rng, P.USER_REQUESTS, c=", and then ".join(clauses))
        parts.append(request if frame is None else P.framed(self.rng, frame, parts, request,
                                                            P.USER_UNDERSTOOD + P.USER_ACK))
        return UserTurn(P.join(parts), False, acts)
