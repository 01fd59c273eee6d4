"""Service tasks: what customers of a built-in domain ask for, planned over its domain actions.

A domain declares a `Service`: how a customer identifies (a tool and the slot the user gives) and a
list of `Scenario`s. A scenario samples one situation from the dialogue's current database state (its
`pick` query; the columns are the slots the user knows), writes a gold plan (identification first,
then the actions), and executes it on the scratch copy like every programmatic task. Users speak as
customers do: what they want in their words (`say`), identifiers only as slots they may withhold
until asked, never internal fields (a new order's number is reported back, not dictated).

Scenario kinds: `public` (no account needed), `read`, `write` (the write needs the user's explicit
confirmation; with `decline_prob` the user declines instead and the gold plan stops before the write)
and `refuse`: the policy forbids the request (a shipped order, outside the return window, another
customer's order, no identification), so the gold plan only reads, the database stays unchanged,
and the assistant must explain the policy's reason (`Subtask.detail["refusal"]`).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any, Callable

from toolturn.core.errors import ToolturnError
from toolturn.core.judges.facts import rows
from toolturn.core.sqlenv import Sandbox
from toolturn.core.tasks.programmatic import MAX_ATTEMPTS, Infeasible, _Plan
from toolturn.core.tasks.types import ReportItem, Subtask, Task, format_value, lookup
from toolturn.core.tasks.wording import describe_goal


def S(slot: str) -> dict:
    """An argument the user knows (a slot of the scenario's pick row)."""
    return {"$fact": slot}


def R(step: int, *path) -> dict:
    """An argument read from an earlier step's result."""
    return {"$ref": [step, *path]}


@dataclass(frozen=True)
class M:
    """The `out` field of the list item of step `step` whose `field` equals the pick row's `slot`."""
    step: int
    field: str
    slot: str
    out: str


@dataclass(frozen=True)
class C:
    """A literal argument taken from the pick row (what the assistant makes of the user's words,
    e.g. 'it arrived damaged' -> reason 'damaged')."""
    slot: str


@dataclass(frozen=True)
class Step:
    tool: str
    args: dict
    expect_error: bool = False


@dataclass(frozen=True)
class Part:
    """One request of a scenario, as the user makes it."""
    say: str | tuple[str, ...]  # the request in the customer's words (one of several); {slot}: values the user states
    steps: tuple[int, ...]  # plan steps serving it (0 is the identification unless the scenario is public)
    kind: str = "service"  # service | refuse
    ids: tuple[str, ...] = ()  # identifier slots the user may withhold until asked
    values: tuple[str, ...] = ()  # slots stated with the request
    report: tuple[tuple, ...] = ()  # (label, step, *path): what the assistant must state
    refusal: str | None = None  # the policy's reason id (kind refuse)
    withhold: tuple[str, ...] = ()  # slots the user refuses to give (skip identification)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # public | read | write | refuse
    pick: str  # SQL; its columns are the slots; `:email` is the dialogue's customer (NULL: anyone)
    steps: tuple[Step, ...]  # after the identification (which the generator prepends unless public)
    parts: tuple[Part, ...]
    write: int | None = None  # the index (in the full plan) of the step that writes
    weight: float = 1.0  # its `domain.task_mix` weight where the service's `task_mix` does not name it


@dataclass(frozen=True)
class Service:
    identify: tuple[str, str]  # (tool, argument): how a customer is identified
    slot: str  # the user's slot for that argument, e.g. "email address"
    owner_key: str  # the identified customer's id in the identification result
    scenarios: tuple[Scenario, ...]
    decline_prob: float = 0.1  # a write the user declines at the confirmation
    task_mix: dict[str, float] = field(default_factory=dict)  # the default task mix: kind -> weight
    # write tool -> ways to propose the change in the customer's terms (core/roles/phrasing.change)
    changes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # write tool -> what the customer needs to decide (a price difference, a refund), from the change's arguments
    # and the rows read before it: extra placeholders of its `changes`
    terms: dict[str, Callable[[dict, list[dict]], dict[str, Any]]] = field(default_factory=dict)
    facts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # report label -> ways to state it ({v})
    asks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # slot -> the service's own ways to ask for it
    records: dict[str, str] = field(default_factory=dict)  # slot -> how an answer names its record ("order {v}")
    # refusal reason -> other ways to give the policy's built-in reason (the same placeholders): used only while
    # the policy in effect gives that built-in reason (`builtin_reasons`), never over a policy file's own words
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    builtin_reasons: dict[str, str] = field(default_factory=dict)
    # (field, value) of a row a request reads -> ways to point it out ("it's discontinued"), said once per task
    notes: dict[tuple[str, Any], tuple[str, ...]] = field(default_factory=dict)


DIFFICULTY = {"public": "easy", "read": "medium", "refuse": "medium", "write": "hard"}


class ServiceTaskGenerator:
    """Samples service tasks for a built-in domain; tasks of one dialogue share one customer."""

    def __init__(self, domain, service: Service, weights: dict[str, float], refusal_share: float,
                 task_mix: dict[str, float] | None = None):
        """`task_mix`: task kind (scenario name) -> weight, over the defaults of the domain's tasks module. A kind
        is drawn with its weight times its difficulty's weight; a refusal kind (a share `refusal_share` of all
        tasks) with its weight alone."""
        self.domain, self.service, self.refusal_share = domain, service, refusal_share
        self.tools = {t.name: t for t in domain.tools}
        self.mix = resolve_task_mix(service, domain.name, task_mix)
        self.weight = {s.name: self.mix[s.name] * (1.0 if s.kind == "refuse" else
                                                   float(weights.get(DIFFICULTY[s.kind], 0)))
                       for s in service.scenarios}
        self.requests = [s for s in service.scenarios if s.kind != "refuse" and self.weight[s.name] > 0]
        if not self.requests:
            raise ToolturnError(f"tasks.difficulty and domain.task_mix select no task of {domain.name} "
                                f"(every kind but refusals has weight 0)")
        self.refusals = [s for s in service.scenarios if s.kind == "refuse" and self.weight[s.name] > 0]

    def _choose(self, rng: random.Random, identified: bool) -> list[Scenario]:
        if self.refusals and rng.random() < self.refusal_share:
            pool = [s for s in self.refusals if not (identified and _skips_identity(s))]
            if pool:
                return pool
        return self.requests

    def generate(self, sandbox: Sandbox, rng: random.Random, task_id: str, rejects: dict[str, int],
                 prior: list[Task] | None = None) -> Task | None:
        prior = prior or []
        if any(_skips_identity_task(t) for t in prior):
            return None  # the customer would not identify: nothing else of theirs can be done
        identified = any(t.steps and t.steps[0].tool == self.service.identify[0] for t in prior)
        email = next((t.facts[self.service.slot] for t in prior if self.service.slot in t.facts), None)
        # one customer's visit: no request twice, nothing more about a record they declined or were refused on
        done = {t.template.removesuffix("_declined") for t in prior}
        settled = {v for t in prior if _settled(t) for k, v in t.facts.items()
                   if k != self.service.slot and isinstance(v, str)}
        # and no question about a record whose answer they were given already: (a record's value, a label told)
        told = {(v, r.label) for t in prior for k, v in t.facts.items() if k != self.service.slot
                and isinstance(v, str) for st in t.subtasks for r in st.report}
        pool = [s for s in self._choose(rng, identified) if s.name not in done] or \
            [s for s in self.requests if s.name not in done]  # asked every refusal already
        for _ in range(MAX_ATTEMPTS if pool else 0):
            scenario = rng.choices(pool, weights=[self.weight[s.name] for s in pool])[0]
            plan = _Plan(sandbox, [], [], {})
            try:
                with sandbox.attempt():
                    task = self._plan(scenario, sandbox, rng, plan, task_id, email, settled, told)
            except Infeasible as exc:
                key = f"{scenario.name}: {str(exc).split(':')[0]}"
                rejects[key] = rejects.get(key, 0) + 1
                continue
            return task
        return None

    def _pick(self, sandbox: Sandbox, rng: random.Random, scenario: Scenario, email: Any,
              settled: set = frozenset(), told: set = frozenset()) -> dict:
        cur = sandbox.conn.execute(f"SELECT * FROM ({scenario.pick})", {"email": email})
        names = [d[0] for d in cur.description]
        slots = {slot for part in scenario.parts for slot in part.ids + part.values}
        labels = {label for part in scenario.parts for label, *_ in part.report}
        asked = scenario.kind in ("public", "read") and labels  # a question, not a change

        def answered(row: dict) -> bool:  # every answer of this question already given about one of its records
            return any(labels <= {label for value, label in told if value == row.get(k)} for k in slots)

        rows = [row for row in (dict(zip(names, r)) for r in cur.fetchall())
                if (scenario.kind == "public" or not any(row.get(k) in settled for k in slots))
                and not (asked and answered(row))]
        if not rows:
            raise Infeasible("no matching rows")
        return rows[rng.randrange(len(rows))]

    def _plan(self, scenario: Scenario, sandbox, rng, plan: _Plan, task_id: str, email: Any,
              settled: set = frozenset(), told: set = frozenset()) -> Task:
        row = self._pick(sandbox, rng, scenario, email, settled, told)
        public = scenario.kind == "public" or _skips_identity(scenario)
        steps = list(scenario.steps)
        if not public:
            tool, arg = self.service.identify
            steps.insert(0, Step(tool, {arg: S(self.service.slot)}))
        write = scenario.write
        decline = write is not None and rng.random() < self.service.decline_prob
        proposal, terms = None, {}
        for k, step in enumerate(steps):
            args = {p: _arg(v, row, plan) for p, v in step.args.items()}
            for v in step.args.values():
                if isinstance(v, dict) and "$fact" in v:
                    plan.facts[v["$fact"]] = row[v["$fact"]]
            if k == write:
                resolved = {p: (plan.facts[v["$fact"]] if isinstance(v, dict) and "$fact" in v
                                else lookup(plan.results, v["$ref"]) if isinstance(v, dict) and "$ref" in v else v)
                            for p, v in args.items()}
                if step.tool in self.service.terms:
                    terms = self.service.terms[step.tool](resolved, rows(plan.results))
                if decline:
                    proposal = {"tool": step.tool, "args": resolved}
                    break
            plan.run(self.tools.get(step.tool), args, expect_error=step.expect_error)
        subtasks = []
        for part in scenario.parts:
            for slot in part.values + part.ids:
                plan.facts.setdefault(slot, row[slot])
            say = (part.say if isinstance(part.say, str) else rng.choice(part.say)).format(
                **{k: format_value(v) for k, v in row.items()})
            report = [] if decline and write in part.steps else \
                [ReportItem(label, list(path), lookup(plan.results, list(path))) for label, *path in part.report]
            detail: dict[str, Any] = {"say": say, "scenario": scenario.name}
            tell = {r.label: list(self.service.facts[r.label]) for r in report if r.label in self.service.facts}
            if tell:
                detail["tell"] = tell
            read = rows([r[0] if isinstance(r, list) and r else r  # a search's first row: the one reported
                         for r in (plan.results[k] for k in part.steps if k < len(plan.results) and k != write)])
            notes = [list(said) for (f, v), said in self.service.notes.items() if any(r.get(f) == v for r in read)]
            if notes:
                detail["notes"] = notes
            ids = list(part.ids)
            if not public and 0 in part.steps and email is None:  # a later task: the customer is identified
                ids = [self.service.slot] + ids
            named = next((s for s in (*part.ids, *part.values) if s in self.service.records), None)
            if named:
                detail["record"] = self.service.records[named].format(v=format_value(row[named]))
            asks = {slot: list(self.service.asks[slot]) for slot in ids if slot in self.service.asks}
            if asks:
                detail["ask"] = asks
            if part.refusal:
                detail["refusal"] = part.refusal
                detail["reason_values"] = {k: format_value(v) for k, v in row.items()}
                # the values the policy's reason names must be in the explanation ("booking X is shipped")
                reason = self.domain.rules.reasons.get(part.refusal, "")
                detail["reason_facts"] = {k: row[k] for k in _placeholders(reason) if k in row}
                if part.refusal in self.service.reasons and reason == self.service.builtin_reasons.get(part.refusal):
                    detail["reason_forms"] = [reason, *self.service.reasons[part.refusal]]
            if part.withhold:
                detail["withhold"] = list(part.withhold)
            if write is not None and write in part.steps:
                if steps[write].tool in self.service.changes:
                    detail["change"] = list(self.service.changes[steps[write].tool])
                    if terms:
                        detail["terms"] = {k: format_value(v) for k, v in terms.items()}
                if decline:
                    detail["proposal"], detail["decline"] = proposal, True
                else:
                    detail["write"] = write
            kept = [k for k in part.steps if k < len(plan.steps)]
            subtasks.append(Subtask(part.kind, scenario.name.replace("_", " "), kept, id_slots=ids,
                                    value_slots=list(part.values), report=report, detail=detail))
        task = Task(id=task_id, domain=self.domain.name, difficulty=DIFFICULTY[scenario.kind],
                    template=scenario.name + ("_declined" if decline else ""), goal="", steps=plan.steps,
                    subtasks=subtasks, facts=plan.facts)
        task.goal = describe_goal(task)
        return task


def resolve_task_mix(service: Service, domain: str, task_mix: dict[str, float] | None) -> dict[str, float]:
    """Each task kind's weight: the domain's defaults (`Service.task_mix`, else `Scenario.weight`) with `task_mix`
    over them. An unknown kind or a weight that is not a number >= 0 is one line naming it."""
    mix = {s.name: float(service.task_mix.get(s.name, s.weight)) for s in service.scenarios}
    for kind, weight in (task_mix or {}).items():
        if kind not in mix:
            close = get_close_matches(str(kind), list(mix), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(mix)}"
            raise ToolturnError(f"domain.task_mix: unknown task kind '{kind}' for {domain} ({hint})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ToolturnError(f"domain.task_mix.{kind} must be a number >= 0, got {weight!r}")
        mix[kind] = float(weight)
    return mix


def _arg(value: Any, row: dict, plan: _Plan) -> Any:
    if isinstance(value, C):
        return row[value.slot]
    if isinstance(value, M):
        return {"$ref": [value.step, {"$match": {value.field: row[value.slot]}}, value.out]}
    return value


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _skips_identity(scenario: Scenario) -> bool:
    return any(p.withhold for p in scenario.parts)


def _settled(task: Task) -> bool:
    """The customer declined the change or was refused it: asking again about that record would contradict it."""
    return any(st.detail.get("decline") or st.kind == "refuse" for st in task.subtasks)


def _skips_identity_task(task: Task) -> bool:
    return any(st.detail.get("withhold") for st in task.subtasks)
