"""Held-out evaluation tasks: made once, written to `tasks.jsonl`, faced by every checkpoint.

An item is one episode's worth of tasks from the rule-based task source generation uses
(`core/tasks/sources.rule_task_generator`: service tasks for a built-in domain, schema tasks for any
other database), with executed gold plans and the database state after each task (the gold end
states), plus the tools the assistant is offered.
Items come from their own seed stream, `eval:{seed}:{domain}:{index}` (generation uses
`{seed}:{domain}:{index}`), and their ids (`<domain>-eval-s<seed>-i<index>`) never take a generation
id's form. `check_disjoint` also compares task content (template, plan and facts) with a training
run's tasks, so a task that reappears under another id is caught too.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from toolturn.core.domains import Domain
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write, read_jsonl
from toolturn.core.rundir import RunDir
from toolturn.core.tasks.types import Task

ATTEMPTS_PER_ITEM = 5  # index slots tried per wanted item before giving up on a domain


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

    def to_dict(self) -> dict:
        return {"id": self.id, "tasks": [t.to_dict() for t in self.tasks], "gold": self.gold,
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


def make_items(domain: Domain, generator, num_tasks: int, seed: int, tasks_per_episode: int,
               tools_per_episode: int) -> list[EvalItem]:
    """`generator`: the domain's rule-based task source; the tasks of an item are chained like the
    tasks of one generated dialogue (each sees the earlier ones, e.g. to keep one customer)."""
    pristine = domain.env.open_sandbox()
    start = pristine.state_hash()
    pristine.close()
    items, index = [], 0
    while len(items) < num_tasks:
        if index >= num_tasks * ATTEMPTS_PER_ITEM:
            raise ToolturnError(f"domain {domain.name}: only {len(items)} of {num_tasks} held-out tasks could be "
                                f"made from {index} seeds (no task template fits its data often enough)")
        rng = random.Random(f"eval:{seed}:{domain.name}:{index}")
        item_id = f"{domain.name}-eval-s{seed}-i{index}"
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
        index += 1
        if tasks:
            items.append(EvalItem(item_id, tasks, gold, _tool_subset(domain, rng, tasks, tools_per_episode), start))
    return items


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


def load_or_make(path: Path, settings: dict, make) -> list[EvalItem]:
    """The task file at `path`, made by `make()` on the first run. A later run must ask for the same
    task settings, so every checkpoint faces exactly the same tasks."""
    meta = path.with_suffix(".meta.json")
    if same_settings(meta, settings, "held-out tasks") and path.exists():
        return [EvalItem.from_dict(row) for row in read_jsonl(path, ("id", "tasks", "gold", "tools"), "task item")]
    items = make()
    atomic_write(path, "".join(json.dumps(i.to_dict(), ensure_ascii=False) + "\n" for i in items))
    atomic_write(meta, json.dumps(settings, indent=1, sort_keys=True))
    return items


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


def check_disjoint(items: list[EvalItem], train_paths: list[str]) -> None:
    """One-line error when a held-out task's id or content also occurs in the training data."""
    for path, (ids, prints) in training_tasks(train_paths).items():
        for item in items:
            for task in item.tasks:
                if task.id in ids:
                    raise ToolturnError(f"held-out task {task.id} is also a training task id in {path}")
                if fingerprint(task.to_dict()) in prints:
                    raise ToolturnError(f"held-out task {task.id} ({task.template}) has the same plan and facts as a "
                                        f"training task in {path}; evaluate with another seed")
