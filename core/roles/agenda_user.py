"""Agenda-based user simulator (rule-based, after Schatzmann et al. 2007).

The user holds an agenda: the subtasks of each task, in order. Each turn it
- answers the assistant's questions for identifiers it withheld (or refuses to identify, when the
  task says so), and answers every proposed change with a yes, or a no when the task declines it,
- checks every report against what a customer can check (`core/roles/knowledge.py`: the values of
  its own requests and what the assistant told it; the expected value must appear in the assistant's
  text) and, when it gives feedback, corrects the assistant when one is missing or wrong,
- sometimes (`confirm_prob`) asks for confirmation of a finished subtask before accepting it, when nothing
  else is outstanding, at most once per task: whether a change went through, or a value read out looked up again,
- and, once nothing is outstanding, gives feedback and reveals the next one or two subtasks
  (or all of them, task-oriented), chains the next task into the same dialogue, or closes.
It ends only when every subtask of every task is done.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from toolturn.core.episode import EpisodeState, UserTurn
from toolturn.core.judges.facts import mentions
from toolturn.core.roles import phrasing as P
from toolturn.core.roles.knowledge import Knowledge
from toolturn.core.roles.text_user import reported
from toolturn.core.tasks.types import Task, format_value
from toolturn.core.tasks.wording import clause


# what the user says to close a request (an acknowledgement): after one, no second in the same message
ACKNOWLEDGED = P.USER_UNDERSTOOD + P.USER_KEPT + P.USER_ACK


@dataclass
class UserBehaviour:
    reveal_per_turn: tuple[int, int] | None  # None: reveal the whole task at once (task-oriented)
    withhold_ids: float  # probability of withholding identifiers until asked
    confirm_prob: float  # probability of asking for confirmation of a finished subtask
    feedback: bool  # acknowledge results before the next request, and correct a wrong one
    close_message: bool  # say goodbye at the end (else end silently after the last answer)
    max_corrections: int = 2  # after this many corrections a subtask is given up (and the judge drops it)


class AgendaUser:
    def __init__(self, tasks: list[Task], rng: random.Random, behaviour: UserBehaviour):
        self.tasks, self.rng, self.b = tasks, rng, behaviour
        self.task_index, self.next_subtask = 0, 0
        self.open: dict[tuple[int, int], str] = {}  # (task, subtask) -> "requested" | "confirming"
        self.done: set[tuple[int, int]] = set()
        self.failed: set[tuple[int, int]] = set()
        self.corrections: dict[tuple[int, int], int] = {}
        self.double_checked: set[int] = set()  # tasks the user asked a confirmation in (one each at most)
        self.started = False
        self.knowledge = Knowledge(tasks)

    def completed(self, task_index: int) -> bool:
        return all((task_index, si) in self.done for si in range(len(self.tasks[task_index].subtasks)))

    async def respond(self, state: EpisodeState) -> UserTurn:
        if not self.started:
            self.started = True
            return self._request(P.USER_OPENERS)
        # what the message reports, without a proposal that ends it (its numbers are no answer)
        text = reported(state.messages[-1:], 0)
        parts, acts = [], []
        reports = [a for a in state.assistant_acts if a["act"] == "report" and (a["task"], a["subtask"]) in self.open]
        # a confirmation is asked only once every outstanding request is answered, not beside a proposal or a
        # question to answer, and of one answer: the last
        confirmable = {(a["task"], a["subtask"]) for a in reports} == set(self.open) and not any(
            a["act"] in ("propose", "ask") for a in state.assistant_acts)
        for i, act in enumerate(reports):
            self._review((act["task"], act["subtask"]), text, parts, acts, confirmable and i == len(reports) - 1)
        correcting = any(a["act"] == "correct" for a in acts)
        said = state.messages[-1].get("content") or ""
        for act in state.assistant_acts:
            if act["act"] == "propose":  # what a proposal states (a refund, a new total) the customer now knows
                terms = self.tasks[act["task"]].subtasks[act["subtask"]].detail.get("terms") or {}
                for value in terms.values():
                    if mentions(said, value):
                        self.knowledge.hear(value)
            if act["act"] == "ask" and act["slot"] not in self.tasks[act["task"]].facts:
                parts.append(P.pick(self.rng, P.USER_WITHHOLD, s=act["slot"]))
                acts.append({"act": "withhold", "task": act["task"], "slot": act["slot"]})
            elif act["act"] == "ask":
                value = self.tasks[act["task"]].facts[act["slot"]]
                parts.append(P.pick(self.rng, P.USER_INFORM, s=act["slot"], v=format_value(value)))
                acts.append({"act": "inform", "task": act["task"], "slot": act["slot"], "value": value})
            elif act["act"] == "propose" and not correcting:  # a yes only once the results are right
                declined = self.tasks[act["task"]].subtasks[act["subtask"]].detail.get("decline")
                parts.append(P.pick(self.rng, P.USER_DECLINE if declined else P.USER_AFFIRM))
                acts.append({"act": "decline" if declined else "affirm", "task": act["task"],
                             "subtask": act["subtask"], "step": act["step"]})
        if self.open:
            if not parts:  # the assistant did not address what is outstanding: ask again
                key = next(iter(self.open))
                wanted = clause(self.tasks[key[0]].subtasks[key[1]], self.tasks[key[0]], reveal_ids=True)
                parts.append(P.pick(self.rng, P.USER_REQUESTS, c=wanted))
                acts.append({"act": "request", "task": key[0], "subtask": key[1],
                             "ids": self._slots(self.tasks[key[0]].subtasks[key[1]], True)})
            return UserTurn(P.join(parts), False, acts)
        task = self.tasks[self.task_index]
        if self.next_subtask < len(task.subtasks):
            return self._request(P.USER_NEXT if self.b.feedback else None, parts, acts)
        if self.task_index + 1 < len(self.tasks):
            self.task_index, self.next_subtask = self.task_index + 1, 0
            return self._request(P.USER_CHAIN if self.b.feedback else None, parts, acts)
        if not self.b.close_message:
            return UserTurn(P.join(parts) or None, True, acts + [{"act": "bye"}])
        return UserTurn(P.closing(self.rng, parts, ACKNOWLEDGED), True, acts + [{"act": "bye"}])

    def _review(self, key: tuple[int, int], text: str, parts: list[str], acts: list[dict],
                confirmable: bool = False) -> None:
        st = self.tasks[key[0]].subtasks[key[1]]
        checked = [r for r in st.report if self.knowledge.knows(r.expected)] if self.b.feedback else []
        wrong = next((r for r in checked if not mentions(text, r.expected)), None)
        for r in st.report:
            if mentions(text, r.expected):
                self.knowledge.hear(r.expected)
        if wrong is not None:
            self.corrections[key] = self.corrections.get(key, 0) + 1
            if self.corrections[key] > self.b.max_corrections:
                self.failed.add(key)
                del self.open[key]
                return
            parts.append(P.pick(self.rng, P.USER_CORRECT, l=wrong.label))
            acts.append({"act": "correct", "task": key[0], "subtask": key[1], "label": wrong.label})
            return
        settled = st.kind == "refuse" or st.detail.get("decline") or not st.report  # nothing to double-check
        if self.open[key] == "requested" and confirmable and not settled and key[0] not in self.double_checked \
                and self.rng.random() < self.b.confirm_prob:
            self.open[key] = "confirming"
            self.double_checked.add(key[0])
            wrote = st.kind in ("update", "create", "delete") or "write" in st.detail
            parts.append(P.pick(self.rng, P.USER_CONFIRM if wrote else P.USER_RECHECK))
            acts.append({"act": "confirm", "task": key[0], "subtask": key[1]})
            return
        del self.open[key]
        self.done.add(key)
        if st.kind == "refuse" or st.detail.get("decline"):
            parts.append(P.pick(self.rng, P.USER_UNDERSTOOD if st.kind == "refuse" else P.USER_KEPT))

    def _slots(self, st, reveal_ids: bool) -> list[str]:
        return (list(st.id_slots) if reveal_ids else []) + list(st.value_slots)

    def _request(self, frame: tuple[str, ...] | None, parts: list[str] | None = None,
                 acts: list[dict] | None = None) -> UserTurn:
        """Reveal the next subtasks; `frame` wraps the request (opener, feedback), None: the bare request."""
        parts, acts = parts or [], acts or []
        task = self.tasks[self.task_index]
        remaining = len(task.subtasks) - self.next_subtask
        if self.b.reveal_per_turn is None:
            k = remaining
        else:
            k = min(remaining, self.rng.randint(*self.b.reveal_per_turn))
        clauses = []
        for si in range(self.next_subtask, self.next_subtask + k):
            st = task.subtasks[si]
            reveal = self.b.reveal_per_turn is None or self.rng.random() >= self.b.withhold_ids
            clauses.append(clause(st, task, reveal_ids=reveal))
            acts.append({"act": "request", "task": self.task_index, "subtask": si, "ids": self._slots(st, reveal)})
            self.open[(self.task_index, si)] = "requested"
        self.next_subtask += k
        request = P.pick(self.rng, P.USER_REQUESTS, c=", and then ".join(clauses))
        if frame is None:
            parts.append(request)
        else:
            parts.append(P.framed(self.rng, frame, parts, request, ACKNOWLEDGED))
        return UserTurn(P.join(parts), False, acts)
