"""Held-out evaluation tasks: made once, written to `tasks.jsonl`, faced by every checkpoint.

An item is one episode's worth of tasks from the rule-based task source generation uses
(`core/tasks/sources.rule_task_generator`: service tasks for a built-in domain, schema tasks for any
other database), with executed gold plans and the database state after each task (the gold end
states), plus the tools the assistant is offered.

Items are drawn stratified over task kinds, so that any small evaluation covers each kind in turn
(`KINDS`, in this order; an item's kind is the first that fits, `task_kind`):

- refusal: a request whose gold is a refusal per the domain's policy (a subtask of kind `refuse`);
- write: the gold plans change the database (a declined change does not);
- multi_step: read-only, and a plan step needs a value an earlier step returned (e.g. the customer's id
  from the identification), or the item chains several tasks;
- read: the rest: each step needs only what the user says (one lookup).

Item i aims at kinds[i % len(kinds)] and draws from its own seed stream, `eval:{seed}:{domain}:{i}:{attempt}`
(generation uses `{seed}:{domain}:{i}`), until a task set of that kind comes, at most `ATTEMPTS_PER_ITEM`
times. A kind the domain's task source never made in those draws (a schema database has no refusals) is
dropped from the rotation and named in `tasks.kinds.json` and the report; a kind it made before but not
for a later item is an error. Item ids (`<domain>-eval-s<seed>-i<index>`) never take a generation id's
form. Given training data (`train_data=[RUN, ...]`), a draw that holds one of its tasks (same template,
plan and facts) is passed over; `check_disjoint` then checks ids and content again, so a task file written
elsewhere or by hand cannot hold a training task either. Every arm of an experiment's evaluation gets the
union of all its arms' training data, so they face the same tasks.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from toolturn.core.domains import Domain
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write, read_jsonl
from toolturn.core.rundir import RunDir
from toolturn.core.tasks.types import Task

ATTEMPTS_PER_ITEM = 100  # seeds an item draws for its kind (a 0.15 share is missed with chance 1e-7)
KINDS = ("read", "write", "refusal", "multi_step")  # the rotation of a draw


def _reads_earlier(value) -> bool:
    """A plan argument that holds a value read from an earlier step's result."""
    if isinstance(value, dict):
        return "$ref" in value or any(map(_reads_earlier, value.values()))
    return isinstance(value, list) and any(map(_reads_earlier, value))


def task_kind(tasks: list[Task], changes_db: bool) -> str:
    """The kind of an item's tasks (the module docstring: the first of refusal, write, multi_step, read)."""
    if any(st.kind == "refuse" for t in tasks for st in t.subtasks):
        return "refusal"
    if changes_db:
        return "write"
    if len(tasks) > 1 or any(_reads_earlier(s.args) for t in tasks for s in t.steps):
        return "multi_step"
    return "read"


@dataclass
class EvalItem:
    id: str
    tasks: list[Task]
    gold: list[str]  # database state hash after each task's gold plan
    tools: list[str]  # tool names offered to the assistant
    gold_start: str = ""  # the pristine database's state hash

    @property
    def needs_write(self) -> bool:
        return self.gold[-1] != self.gold_start

    @property
    def kind(self) -> str:
        return task_kind(self.tasks, self.needs_write)

    def to_dict(self) -> dict:  # `kind` is for readers; loading computes it again
        return {"id": self.id, "kind": self.kind, "tasks": [t.to_dict() for t in self.tasks], "gold": self.gold,
                "gold_start": self.gold_start, "tools": self.tools}

    @classmethod
    def from_dict(cls, d: dict) -> "EvalItem":
        return cls(d["id"], [Task.from_dict(t) for t in d["tasks"]], list(d["gold"]), list(d["tools"]),
                   d.get("gold_start", ""))


def fingerprint(task: dict) -> str:
    """What makes two tasks the same task, whatever their ids: the template, the plan and the facts."""
    blob = json.dumps([task.get("template"), task.get("steps"), task.get("facts")], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _tool_subset(domain: Domain, rng: random.Random, tasks: list[Task], size: int) -> list[str]:
    names = sorted(t["function"]["name"] for t in domain.toolset)
    used = {s.tool for t in tasks for s in t.steps}
    if size <= 0 or len(names) <= size:
        return names
    others = [n for n in names if n not in used]
    return sorted(used | set(rng.sample(others, max(0, min(len(others), size - len(used))))))


@dataclass
class Draw:
    items: list[EvalItem]
    skipped: dict[str, str]  # kind -> why the draw holds none (the domain's task source made none)

    def kinds(self) -> dict:
        """What metrics.json records of the draw: items per kind, in rotation order, and the kinds skipped."""
        counts = Counter(i.kind for i in self.items)
        return {"counts": {k: counts[k] for k in KINDS if counts[k]}, "skipped": dict(self.skipped)}


def _draw_item(domain: Domain, generator, seed: int, index: int, kind: str, tasks_per_episode: int,
               tools_per_episode: int, start: str, excluded: frozenset[str]) -> EvalItem | None:
    """Item `index`: the first draw of its own seed stream whose tasks are of `kind` and none of whose tasks
    has a fingerprint in `excluded` (training tasks); None if none comes."""
    item_id = f"{domain.name}-eval-s{seed}-i{index}"
    for attempt in range(ATTEMPTS_PER_ITEM):
        rng = random.Random(f"eval:{seed}:{domain.name}:{index}:{attempt}")
        scratch = domain.env.open_sandbox()
        try:
            tasks, gold = [], []
            for k in range(tasks_per_episode):
                task = generator.generate(scratch, rng, f"{item_id}-t{k}", {}, tasks)
                if task is not None:
                    tasks.append(task)
                    gold.append(scratch.state_hash())
        finally:
            scratch.close()
        if tasks and task_kind(tasks, gold[-1] != start) == kind and \
                not any(fingerprint(t.to_dict()) in excluded for t in tasks):
            return EvalItem(item_id, tasks, gold, _tool_subset(domain, rng, tasks, tools_per_episode), start)
    return None


def make_items(domain: Domain, generator, num_tasks: int, seed: int, tasks_per_episode: int,
               tools_per_episode: int, excluded: frozenset[str] = frozenset()) -> Draw:
    """`generator`: the domain's rule-based task source; the tasks of an item are chained like the
    tasks of one generated dialogue (each sees the earlier ones, e.g. to keep one customer). A draw with a
    task whose fingerprint is in `excluded` (`training_fingerprints`) is passed over, so the items are held
    out from that training data and are the same for every checkpoint given the same exclusions."""
    pristine = domain.env.open_sandbox()
    start = pristine.state_hash()
    pristine.close()
    kinds, skipped, items = list(KINDS), {}, []
    while len(items) < num_tasks:
        if not kinds:
            raise ToolturnError(f"domain {domain.name}: no held-out task could be made from {ATTEMPTS_PER_ITEM} "
                                f"seeds per kind (no task template fits its data)")
        kind = kinds[len(items) % len(kinds)]
        item = _draw_item(domain, generator, seed, len(items), kind, tasks_per_episode, tools_per_episode, start,
                          excluded)
        if item is not None:
            items.append(item)
        elif any(i.kind == kind for i in items):
            raise ToolturnError(f"domain {domain.name}: held-out item {len(items)} found no {kind} task in "
                                f"{ATTEMPTS_PER_ITEM} seeds although earlier items did; ask for fewer tasks")
        else:
            skipped[kind] = f"the task source made no {kind} task in {ATTEMPTS_PER_ITEM} draws"
            kinds.remove(kind)
    return Draw(items, skipped)


def same_settings(path: Path, settings: dict, what: str) -> bool:
    """False when `path` does not exist yet; True when it records `settings`; else a one-line error."""
    if not path.exists():
        return False
    recorded = json.loads(path.read_text())
    if recorded != settings:
        diff = ", ".join(f"{k}: {recorded.get(k)!r} -> {settings.get(k)!r}"
                         for k in sorted(set(recorded) | set(settings)) if recorded.get(k) != settings.get(k))
        raise ToolturnError(f"{path.parent} holds {what} made with other settings ({diff}); "
                            f"use another out_dir or the same settings")
    return True


def load_or_make(path: Path, settings: dict, make) -> Draw:
    """The task file at `path` (with the skipped kinds in `<stem>.kinds.json`), made by `make()` on the first
    run. A later run must ask for the same task settings, so every checkpoint faces exactly the same tasks."""
    meta, kinds = path.with_suffix(".meta.json"), path.with_suffix(".kinds.json")
    if same_settings(meta, settings, "held-out tasks") and path.exists():
        items = [EvalItem.from_dict(row) for row in read_jsonl(path, ("id", "tasks", "gold", "tools"), "task item")]
        return Draw(items, json.loads(kinds.read_text())["skipped"] if kinds.exists() else {})
    draw = make()
    atomic_write(path, "".join(json.dumps(i.to_dict(), ensure_ascii=False) + "\n" for i in draw.items))
    atomic_write(kinds, json.dumps(draw.kinds(), indent=1))
    atomic_write(meta, json.dumps(settings, indent=1, sort_keys=True))  # last: the files above are complete
    return draw


def training_tasks(paths: list[str]) -> dict[str, tuple[set[str], set[str]]]:
    """{run dir: (task ids, task fingerprints)} of generation runs' records (meta.tasks[].gold)."""
    out = {}
    for path in paths:
        ids, prints = set(), set()
        for record in RunDir.existing(path).iter_records():
            for task in record.get("meta", {}).get("tasks", []):
                ids.add(task.get("id"))
                if task.get("gold"):
                    prints.add(fingerprint(task["gold"]))
        out[str(path)] = (ids, prints)
    return out


def training_fingerprints(training: dict[str, tuple[set[str], set[str]]]) -> frozenset[str]:
    """The content fingerprints of every task of `training` (`training_tasks`)."""
    return frozenset(p for _, prints in training.values() for p in prints)


def check_disjoint(items: list[EvalItem], training: dict[str, tuple[set[str], set[str]]]) -> None:
    """One-line error when a held-out task's id or content also occurs in `training` (`training_tasks`)."""
    for path, (ids, prints) in training.items():
        for item in items:
            for task in item.tasks:
                if task.id in ids:
                    raise ToolturnError(f"held-out task {task.id} is also a training task id in {path}")
                if fingerprint(task.to_dict()) in prints:
                    raise ToolturnError(f"held-out task {task.id} ({task.template}) has the same plan and facts as a "
                                        f"training task in {path}; evaluate with another seed")
