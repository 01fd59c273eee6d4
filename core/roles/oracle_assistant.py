"""Oracle assistant (rule-based): follows the gold plan, one tool call at a time.

It works through the subtasks the user has requested, in order. Before a call it checks that every
fact the call needs has been given by the user; if not, it asks for it (the identification first:
a plan starts with it, and one identification serves the whole dialogue). Before every write it
states the exact change and asks for confirmation, as the last thing its message says, and writes
only after the user's yes; a declined change is left undone. A request the policy forbids is refused with the
policy's reason. It reads the real tool results back and reports the values in text. With
`slip_rate` it misreports a number now and then, so the data also shows a user catching and the
assistant correcting a mistake: only a number the customer can check (`core/roles/knowledge.py`), in a
turn marked as context (`AssistantTurn.context`, recorded with weight 0), so that a model trained on the
data learns the correction, never the slip; a correction is answered before anything else.
"""

from __future__ import annotations

import json
import random
from collections import deque
from typing import Any

from toolturn.core.episode import AssistantTurn, EpisodeState
from toolturn.core.judges.facts import mentions
from toolturn.core.policy import GENERIC, Policy
from toolturn.core.roles import phrasing as P
from toolturn.core.roles.knowledge import Knowledge
from toolturn.core.tasks.types import Task, format_value, lookup, resolve_args


def describe_change(tool: str, args: dict, skip: set[str] = frozenset()) -> str:
    """The exact change a write call makes, in words: every argument value but the customer's own id."""
    shown = ", ".join(f"{k.replace('_', ' ')} {format_value(v)}" for k, v in args.items()
                      if k not in skip and v is not None)
    return tool.replace("_", " ") + (f" with {shown}" if shown else "")


class OracleAssistant:
    def __init__(self, tasks: list[Task], rng: random.Random, write_tools: set[str], slip_rate: float = 0.0,
                 policy: Policy = GENERIC, identify: tuple[str, str] | None = None):
        """`identify`: (identification tool, the user's slot for it) of a domain with customers."""
        self.tasks, self.rng, self.slip_rate, self.write_tools = tasks, rng, slip_rate, write_tools
        self.policy, self.identify = policy, identify
        self.owner_key = {policy.identity.key} if policy.identity else set()
        self.identity: Any = None  # the identification result, shared by every task of the dialogue
        self.confirmed: set[tuple[int, int]] = set()  # (task, step) writes the user said yes to
        self.declined: set[tuple[int, int]] = set()  # (task, subtask) changes the user said no to
        self.withheld = False  # the user refused to identify
        self.results: list[list[Any]] = [[None] * len(t.steps) for t in tasks]
        self.provided: list[dict[str, Any]] = [{} for _ in tasks]  # per task: slot names repeat across tasks
        self.queue: deque[tuple[str, int, int]] = deque()  # (mode, task, subtask)
        self.rerun: dict[tuple[int, int], Any] = {}
        self.pending: tuple[int, int, bool] | None = None  # (task, step, is_rerun)
        self.writes = 0  # writes executed so far
        self.writes_before: dict[tuple[int, int], int] = {}  # (task, step) -> writes when it ran
        self.seen_turn = -1
        self.lines: list[str] = []
        self.acts: list[dict] = []
        self.slipped = False  # this turn misreports a number on purpose
        self.noted: set[tuple[int, str]] = set()  # (task, note) pointed out already
        self.knowledge = Knowledge(tasks)  # what the customer can check (they know what we told them)

    def _absorb_user(self, acts: list[dict]) -> None:
        fixes = []  # the user's corrections come first: no re-proposal or write before the wrong number is put right
        for act in acts:
            kind = act["act"]
            if kind == "request":
                for slot in act["ids"]:
                    self.provided[act["task"]][slot] = self.tasks[act["task"]].facts[slot]
                self.queue.append(("subtask", act["task"], act["subtask"]))
            elif kind == "inform":
                self.provided[act["task"]][act["slot"]] = act["value"]
            elif kind == "affirm":
                self.confirmed.add((act["task"], act["step"]))
            elif kind == "decline":
                self.declined.add((act["task"], act["subtask"]))
            elif kind == "withhold":
                self.withheld = True
            elif kind in ("confirm", "correct"):
                self.rerun.pop((act["task"], act["subtask"]), None)
                if kind == "confirm":
                    self.queue.append(("confirm", act["task"], act["subtask"]))
                else:
                    fixes.append(("fix", act["task"], act["subtask"]))
        self.queue.extendleft(reversed(fixes))

    async def respond(self, state: EpisodeState) -> AssistantTurn:
        if state.user_turns != self.seen_turn:
            self.seen_turn, self.lines, self.acts, self.slipped = state.user_turns, [], [], False
            self._absorb_user(state.user_acts)
        if self.pending is not None:
            ti, k, is_rerun = self.pending
            value = json.loads(state.messages[-1]["content"])
            if is_rerun:
                self.rerun[(ti, k)] = value
            else:
                self.results[ti][k] = value
                if self.identify and self.tasks[ti].steps[k].tool == self.identify[0] and "error" not in value:
                    self.identity = value
                self.writes_before[(ti, k)] = self.writes
                self.writes += self.tasks[ti].steps[k].tool in self.write_tools
            self.pending = None
        while self.queue:
            mode, ti, si = self.queue[0]
            task, st = self.tasks[ti], self.tasks[ti].subtasks[si]
            last = st.steps[-1] if st.steps else None
            if mode == "subtask":
                todo = [k for k in st.steps if self.results[ti][k] is None]
            else:  # confirm or fix: read again, unless that would repeat a write or see a later write
                rereadable = last is not None and task.steps[last].tool not in self.write_tools \
                    and self.writes_before.get((ti, last)) == self.writes
                todo = [last] if rereadable and (ti, last) not in self.rerun else []
            if todo:
                step = task.steps[todo[0]]
                if mode == "subtask" and self.identity is not None and self.identify and step.tool == self.identify[0]:
                    self.results[ti][todo[0]] = self.identity  # identified earlier in this dialogue
                    continue
                missing = [a["$fact"] for a in step.args.values()
                           if isinstance(a, dict) and "$fact" in a and a["$fact"] not in self.provided[ti]]
                if missing:
                    return self._ask(ti, missing[0])
                args = resolve_args(step, self.provided[ti], self.results[ti])
                if step.tool in self.write_tools and (ti, todo[0]) not in self.confirmed:
                    return self._propose(ti, si, todo[0], step.tool, args)
                self.pending = (ti, todo[0], mode != "subtask")
                return AssistantTurn("", [{"name": step.tool, "arguments": args}])
            proposal = st.detail.get("proposal")
            if mode == "subtask" and proposal and (ti, si) not in self.declined:
                return self._propose(ti, si, None, proposal["tool"], proposal["args"])
            if mode == "subtask" and st.detail.get("withhold") and not self.withheld:
                return self._ask(ti, st.detail["withhold"][0])
            self.lines.append(self._report(mode, ti, si))
            self.acts.append({"act": "report", "task": ti, "subtask": si, "mode": mode})
            self.queue.popleft()
            self.rerun.pop((ti, last), None)
        answered = self.acts and self.acts[-1]["act"] == "report" and not self.lines[-1].endswith("?")
        if answered and self.rng.random() < HANDBACK_RATE:
            self.lines.append(P.pick(self.rng, P.ASSISTANT_HANDBACK))
        return self._final()

    def _final(self) -> AssistantTurn:
        return AssistantTurn(P.join(self.lines), [], list(self.acts), context=self.slipped)

    def _ask(self, ti: int, slot: str) -> AssistantTurn:
        self.acts.append({"act": "ask", "task": ti, "slot": slot})
        identity = self.identify is not None and slot == self.identify[1]
        own = next((st.detail["ask"][slot] for st in self.tasks[ti].subtasks if slot in st.detail.get("ask", {})), None)
        if own and self.rng.random() < DOMAIN_ASK_RATE:  # the service's own words for it
            lead = self.rng.choice(P.IDENTITY_LEAD if identity else P.ASK_LEAD)
            self.lines.append(P.join([lead, P.fill(self.rng.choice(own), s=slot)]))
        else:
            self.lines.append(P.pick(self.rng, P.ASSISTANT_ASK_IDENTITY if identity else P.ASSISTANT_ASK, s=slot))
        return self._final()

    def _propose(self, ti: int, si: int, step: int | None, tool: str, args: dict) -> AssistantTurn:
        """State the exact change and ask for a yes: the last thing this message says."""
        self.acts.append({"act": "propose", "task": ti, "subtask": si, "step": step})
        detail = self.tasks[ti].subtasks[si].detail
        says = detail.get("change")  # the domain's ways to say it (core/domains/<name>/phrasing.py)
        shown = {k: v for k, v in args.items() if k not in self.owner_key}
        c = P.change(says if isinstance(says, str) else self.rng.choice(says), shown,
                     list(self.provided[ti].values()), self.results[ti], detail.get("terms")) if says else \
            describe_change(tool, args, self.owner_key)
        for value in (detail.get("terms") or {}).values():  # the customer now knows the refund, the new total
            if mentions(c, value):
                self.knowledge.hear(value)
        self.lines.append(P.pick(self.rng, P.ASSISTANT_PROPOSE, c=c))
        return self._final()

    def _report(self, mode: str, ti: int, si: int) -> str:
        """The answer to one subtask (after another answer in the same message, it follows on from it)."""
        st = self.tasks[ti].subtasks[si]
        follows = any(a["act"] == "report" for a in self.acts)
        if st.kind == "refuse":
            forms = st.detail.get("reason_forms")  # the service's ways to give the policy's own reason
            values = st.detail.get("reason_values", {})
            reason = self.rng.choice(forms).format(**values) if forms else \
                self.policy.reason(st.detail["refusal"], **values)
            return P.pick(self.rng, P.ASSISTANT_REFUSE, r=reason)
        if st.detail.get("decline"):
            return P.pick(self.rng, P.ASSISTANT_NO_CHANGE)
        results = list(self.results[ti])
        last = st.steps[-1]
        if (ti, last) in self.rerun:
            results[last] = self.rerun[(ti, last)]
        if isinstance(results[last], dict) and "error" in results[last] and len(results[last]) == 1:
            ids = ", ".join(f"{s} {format_value(self.provided[ti].get(s))}" for s in st.id_slots) or st.entity
            return P.pick(self.rng, P.ASSISTANT_ERROR, e=results[last]["error"], k=ids)
        items = [(r.label, r.expected if r.path is None else lookup(results, r.path)) for r in st.report]
        told = items
        checkable = [i for i, (_, v) in enumerate(items) if _is_number(v) and self.knowledge.knows(v)]
        if mode == "subtask" and checkable and self.rng.random() < self.slip_rate:
            told = self._slip(items, checkable)
        for (_, right), (_, said) in zip(items, told):
            if said == right:
                self.knowledge.hear(right)
        f = P.facts_sentence(told, self.rng, st.detail.get("tell"))
        wrote = st.detail.get("write") is not None  # only a report after a write opens with "Done"
        record = st.detail.get("record")  # how the service names the record asked about ("order ORD-1")
        if mode == "subtask" and not wrote and not follows and record and self.rng.random() < ANCHOR_RATE:
            return self._said(ti, st, [P.fill(self.rng.choice(P.ASSISTANT_ANCHOR), k=record) + " " + f + "."])
        if mode == "subtask":
            templates = P.ASSISTANT_REPORT_WRITE if wrote else \
                P.ASSISTANT_REPORT_NEXT if follows else P.ASSISTANT_REPORT
        elif mode == "confirm":  # a read looked up again, or a change answered from its own result
            changed = wrote or self.tasks[ti].steps[last].tool in self.write_tools
            templates = P.ASSISTANT_CONFIRM if (ti, last) in self.rerun else \
                P.ASSISTANT_CONFIRM_WRITE if changed else P.ASSISTANT_REPORT
        else:
            templates = P.ASSISTANT_FIX
        return self._said(ti, st, [P.pick(self.rng, templates, f=f, F=P.capitalize(f))])

    def _said(self, ti: int, st, said: list[str]) -> str:
        """An answer and what the customer needs to know about its record (a discontinued product), said once."""
        for note in st.detail.get("notes", []):
            if (ti, note[0]) not in self.noted:
                self.noted.add((ti, note[0]))
                said.append(P.capitalize(self.rng.choice(note)) + ".")
        return P.join(said)

    def _slip(self, items: list[tuple[str, Any]], checkable: list[int]) -> list[tuple[str, Any]]:
        """Misread one number the customer can check (their review catches it); the turn becomes context."""
        i = self.rng.choice(checkable)
        label, value = items[i]
        wrong = value + self.rng.randint(1, 9) if isinstance(value, int) else round(value * 1.5 + 1, 2)
        if mentions(format_value(wrong), value):
            return items
        self.slipped = True
        return items[:i] + [(label, wrong)] + items[i + 1:]


HANDBACK_RATE = 0.25  # the share of messages ending in an answer that hand the turn back ("Anything else?")
ANCHOR_RATE = 0.35  # the share of first answers in a message that name their record ("For order number X, ...")
DOMAIN_ASK_RATE = 0.6  # the share of questions for a slot asked in the service's own words


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
