"""Programmatic task generator: goals grounded in real rows, each with an executed gold plan.

A template samples rows from the dialogue's current database state, writes a plan of tool calls
whose later arguments reference earlier results, and executes the plan on a scratch copy. Only plans
that run as expected become tasks, and the values they produced become the facts the assistant must
report. Tasks of one dialogue are generated in sequence on the same scratch copy, so a chained task
sees the writes of the tasks before it, exactly as the dialogue will.

Difficulty sets the plan: easy = 1 step; medium = 2-3 dependent steps (a later call needs an id an
earlier call returned); hard = 4+ steps including writes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from toolturn.core.sqlenv import Sandbox, SqlTool
from toolturn.core.sqlschema import Column, ForeignKey, Table, quote_ident
from toolturn.core.tasks.types import DIFFICULTIES, PlanStep, ReportItem, Subtask, Task, lookup, resolve_args
from toolturn.core.tasks.wording import describe_goal
from toolturn.core.tools.schema_tools import MAX_RESULTS, label, singular

MAX_ATTEMPTS = 40


class Infeasible(Exception):
    """The sampled rows do not support this template; try another."""


def fresh_like(rng: random.Random, value: Any) -> Any:
    """A new value of the same shape for a UNIQUE column: 'ORD-062125' -> 'ORD-580413'."""
    if not isinstance(value, str):
        return value + rng.randint(1000, 9999) if isinstance(value, int) else value
    if any(ch.isdigit() for ch in value):
        return "".join(str(rng.randint(0, 9)) if ch.isdigit() else ch for ch in value)
    local, at, host = value.partition("@")
    return f"{local}.{rng.randint(10, 99)}{at}{host}"


def slot_name(entity: str, param: str) -> str:
    """'customer' + 'email' -> 'customer email'; 'order' + 'order_number' -> 'order number'."""
    field = label(param)
    return field if field.startswith(entity + " ") else f"{entity} {field}"


def fact(slot: str) -> dict:
    return {"$fact": slot}


def ref(*path) -> dict:
    return {"$ref": list(path)}


@dataclass
class _Plan:
    """A plan under construction, executed step by step on the scratch sandbox."""
    sandbox: Sandbox
    steps: list[PlanStep]
    results: list[Any]
    facts: dict[str, Any]

    def run(self, tool: SqlTool | None, args: dict, expect_error: bool = False) -> Any:
        if tool is None:
            raise Infeasible("tool not available")
        step = PlanStep(tool.name, args, expect_error)
        result = self.sandbox.call(tool.name, resolve_args(step, self.facts, self.results))
        if result.ok == expect_error:
            raise Infeasible(f"{tool.name}: {result.content[:80]}")
        self.steps.append(step)
        self.results.append(result.value)
        return result.value

    def report(self, label_: str, *path) -> ReportItem:
        return ReportItem(label_, list(path), lookup(self.results, list(path)))


class TaskGenerator:
    """Samples tasks for one domain. Built once per run; `generate` takes the per-dialogue rng."""

    def __init__(self, domain, weights: dict[str, float]):
        self.domain = domain
        self.weights = [float(weights.get(d, 0)) for d in DIFFICULTIES]
        if sum(self.weights) <= 0:
            raise ValueError("difficulty weights must not all be zero")
        self.tools = {t.name: t for t in domain.tools}
        # a listing stays within what the policy lets one reply disclose
        self.max_children = min(MAX_RESULTS - 1, getattr(getattr(domain, "rules", None), "bulk_limit", MAX_RESULTS))
        self.tables = {name: t for name, t in domain.schema.tables.items() if t.primary_key}
        probe = domain.env.open_sandbox()
        try:
            self.unique_text = {name: self._unique_text_columns(probe, t) for name, t in self.tables.items()}
        finally:
            probe.close()
        self.templates: dict[str, list[Callable]] = {
            "easy": [self._lookup, self._find, self._missing, self._summary],
            "medium": [self._parent, self._related, self._find_then_get],
            "hard": [self._update_child, self._create_child, self._delete_child, self._find_update],
        }

    # ---- schema helpers -------------------------------------------------------------------------
    @staticmethod
    def _unique_text_columns(sandbox: Sandbox, t: Table) -> list[Column]:
        out = []
        for c in t.columns:
            if c.affinity != "text" or c.pk_index:
                continue
            q = quote_ident(c.name)
            n, distinct = sandbox.conn.execute(
                f"SELECT COUNT({q}), COUNT(DISTINCT {q}) FROM {quote_ident(t.name)}").fetchone()
            if n >= 2 and n == distinct:
                out.append(c)
        return out

    def _tool(self, prefix: str, t: Table) -> SqlTool | None:
        """The table's get_/search_/create_/update_/delete_ tool (there is at most one of each)."""
        return next((x for x in self.tools.values() if x.table == t.name and x.name.startswith(prefix)), None)

    def _entity(self, t: Table) -> str:
        get = self._tool("get_", t)
        return get.name[len("get_"):] if get else singular(t.slug)

    def _list_tool(self, child: Table, fk: ForeignKey) -> SqlTool | None:
        params = sorted(child.column(c).param for c in fk.columns)
        for tool in self.tools.values():
            if tool.table == child.name and tool.name.startswith("list_") \
                    and sorted(tool.parameters["required"]) == params:
                return tool
        return None

    def _row(self, sandbox: Sandbox, rng: random.Random, t: Table, where: str = "", args: tuple = ()) -> dict:
        q = quote_ident(t.name)
        n = sandbox.conn.execute(f"SELECT COUNT(*) FROM {q} {where}", args).fetchone()[0]
        if n == 0:
            raise Infeasible(f"no rows in {t.name}")
        cur = sandbox.conn.execute(f"SELECT {t.select_list} FROM {q} {where} ORDER BY {t.order_by} LIMIT 1 OFFSET ?",
                                   (*args, rng.randrange(n)))
        return dict(zip([d[0] for d in cur.description], cur.fetchone()))

    @staticmethod
    def _field(rng: random.Random, t: Table, row: dict, exclude: set[str] = frozenset()) -> Column:
        fk_cols = {c for fk in t.foreign_keys for c in fk.columns}
        options = [c for c in t.columns if not c.pk_index and c.name not in fk_cols and c.param not in exclude
                   and row.get(c.param) is not None]
        if not options:
            raise Infeasible(f"no reportable field in {t.name}")
        return rng.choice(options)

    def _single_fks(self, t: Table) -> list[tuple[ForeignKey, Table]]:
        return [(fk, self.tables[fk.ref_table]) for fk in t.foreign_keys
                if len(fk.columns) == 1 and fk.ref_table in self.tables
                and len(self.tables[fk.ref_table].primary_key) == 1]

    def _new_value(self, rng: random.Random, t: Table, col: Column, current: Any, tool: SqlTool) -> Any:
        spec = tool.parameters["properties"][col.param]
        if "enum" in spec:
            others = [v for v in spec["enum"] if v != current]
            if not others:
                raise Infeasible("enum has one value")
            return rng.choice(others)
        if col.json_type == "integer" and isinstance(current, int):
            return current + rng.randint(1, 5)
        if col.json_type == "number" and isinstance(current, (int, float)):
            return round(current * rng.choice((0.8, 0.9, 1.1, 1.25)) + 1, 2)
        if isinstance(current, str):
            return current + rng.choice((" (updated)", " - revised", " II"))
        raise Infeasible(f"cannot invent a new value for {col.name}")

    def _key_slots(self, t: Table, row: dict, plan: _Plan) -> dict[str, dict]:
        entity = label(self._entity(t))
        args = {}
        for c in t.primary_key:
            slot = slot_name(entity, c.param)
            plan.facts[slot] = row[c.param]
            args[c.param] = fact(slot)
        return args

    def _parent_by_text(self, sandbox, rng, parent: Table, plan: _Plan, where: str = "", args: tuple = ()):
        """Step 0: find one parent row by a unique text value the user knows. Returns the row, the
        user's slot, and the parameter searched on (not worth reporting back: the user said it)."""
        if not self.unique_text.get(parent.name):
            raise Infeasible(f"{parent.name} has no unique text column")
        col = rng.choice(self.unique_text[parent.name])
        row = self._row(sandbox, rng, parent, where, args)
        if row[col.param] is None:
            raise Infeasible("null lookup value")
        slot = slot_name(label(self._entity(parent)), col.param)
        plan.facts[slot] = row[col.param]
        found = plan.run(self._tool("search_", parent), {col.param: fact(slot)})
        if len(found) != 1:
            raise Infeasible("lookup value is not unique under substring search")
        return row, slot, col.param

    # ---- easy -----------------------------------------------------------------------------------
    def _lookup(self, sandbox, rng, plan):
        t = rng.choice(list(self.tables.values()))
        row = self._row(sandbox, rng, t)
        args = self._key_slots(t, row, plan)
        plan.run(self._tool("get_", t), args)
        f = self._field(rng, t, row)
        return [Subtask("lookup", label(self._entity(t)), [0], id_slots=[a["$fact"] for a in args.values()],
                        report=[plan.report(label(f.param), 0, f.param)])]

    def _find(self, sandbox, rng, plan):
        t = rng.choice([t for t in self.tables.values() if self.unique_text[t.name]] or [None])
        if t is None:
            raise Infeasible("no table with a unique text column")
        row, slot, searched = self._parent_by_text(sandbox, rng, t, plan)
        f = self._field(rng, t, row, exclude={searched})
        return [Subtask("find", label(self._entity(t)), [0], id_slots=[slot],
                        report=[plan.report(label(f.param), 0, 0, f.param)])]

    def _missing(self, sandbox, rng, plan):
        t = rng.choice(list(self.tables.values()))
        pk = t.primary_key
        if len(pk) != 1 or pk[0].json_type != "integer":
            raise Infeasible("needs a single integer key")
        top = sandbox.conn.execute(f"SELECT MAX({quote_ident(pk[0].name)}) FROM {quote_ident(t.name)}").fetchone()[0]
        missing_id = (top or 0) + rng.randint(1000, 9999)
        slot = slot_name(label(self._entity(t)), pk[0].param)
        plan.facts[slot] = missing_id
        plan.run(self._tool("get_", t), {pk[0].param: fact(slot)}, expect_error=True)
        return [Subtask("missing", label(self._entity(t)), [0], id_slots=[slot],
                        report=[ReportItem(slot, None, missing_id)])]

    def _summary(self, sandbox, rng, plan):
        options = [(tool, t) for t in self.tables.values() for tool in self.tools.values()
                   if tool.table == t.name and tool.name.startswith("summarize_")]
        if not options:
            raise Infeasible("no summary tool")
        tool, t = rng.choice(options)
        group = next(c for c in t.columns if tool.name.endswith(f"_by_{c.param}"))
        row = self._row(sandbox, rng, t, f"WHERE {quote_ident(group.name)} IS NOT NULL")
        value = row[group.param]
        plan.run(tool, {})
        return [Subtask("summary", label(self._entity(t)), [0],
                        report=[plan.report(f"number of {label(self._entity(t))} records with {label(group.param)} "
                                            f"{value}", 0, {"$match": {group.param: value}}, "count")],
                        detail={"group": label(group.param), "value": value})]

    # ---- medium ---------------------------------------------------------------------------------
    def _parent(self, sandbox, rng, plan):
        options = [(t, fk, p) for t in self.tables.values() for fk, p in self._single_fks(t)]
        if not options:
            raise Infeasible("no foreign keys")
        child, fk, parent = rng.choice(options)
        fc, pc = child.column(fk.columns[0]), parent.column(fk.ref_columns[0])
        row = self._row(sandbox, rng, child, f"WHERE {quote_ident(fc.name)} IN "
                                             f"(SELECT {quote_ident(pc.name)} FROM {quote_ident(parent.name)})")
        args = self._key_slots(child, row, plan)
        plan.run(self._tool("get_", child), args)
        plan.run(self._tool("get_", parent), {parent.primary_key[0].param: ref(0, fc.param)})
        f = self._field(rng, child, row)
        parent_row = plan.results[1]
        g = self._field(rng, parent, parent_row)
        return [Subtask("lookup", label(self._entity(child)), [0], id_slots=[a["$fact"] for a in args.values()],
                        report=[plan.report(label(f.param), 0, f.param)]),
                Subtask("parent", label(self._entity(parent)), [1], report=[plan.report(label(g.param), 1, g.param)])]

    def _children_setup(self, sandbox, rng, plan, min_children: int = 1):
        """Steps 0-1: find a parent by a unique text value, then list its children across a foreign key."""
        options = [(t, fk, p) for t in self.tables.values() for fk, p in self._single_fks(t)
                   if self.unique_text.get(p.name) and p.name != t.name]
        if not options:
            raise Infeasible("no parent with a unique text column")
        child, fk, parent = rng.choice(options)
        fc, pc = child.column(fk.columns[0]), parent.column(fk.ref_columns[0])
        having = (f"WHERE {quote_ident(pc.name)} IN (SELECT {quote_ident(fc.name)} FROM {quote_ident(child.name)} "
                  f"GROUP BY 1 HAVING COUNT(*) BETWEEN ? AND ?)")
        row, slot, searched = self._parent_by_text(sandbox, rng, parent, plan, having,
                                                   (min_children, self.max_children))
        plan.run(self._list_tool(child, fk), {fc.param: ref(0, 0, pc.param), "max_results": MAX_RESULTS})
        g = self._field(rng, parent, row, exclude={searched})
        pk = child.primary_key[0].param
        children = label(singular(child.slug)) + " records"
        subtasks = [Subtask("find", label(self._entity(parent)), [0], id_slots=[slot],
                            report=[plan.report(label(g.param), 0, 0, g.param)]),
                    Subtask("related", children, [1],
                            report=[plan.report(f"number of {children}", 1, "$len"),
                                    plan.report(f"{label(pk)}s", 1, {"$pluck": pk})])]
        return child, fk, parent, subtasks

    def _related(self, sandbox, rng, plan):
        child, fk, _parent, subtasks = self._children_setup(sandbox, rng, plan)
        others = [(ofk, q) for ofk, q in self._single_fks(child) if ofk != fk]
        if others and rng.random() < 0.6:  # a third step: follow the first child's other foreign key
            ofk, q = rng.choice(others)
            oc = child.column(ofk.columns[0])
            if plan.results[1][0].get(oc.param) is not None:
                plan.run(self._tool("get_", q), {q.primary_key[0].param: ref(1, 0, oc.param)})
                g = self._field(rng, q, plan.results[2])
                subtasks.append(Subtask("parent", label(self._entity(q)), [2],
                                        report=[plan.report(label(g.param), 2, g.param)],
                                        detail={"of": "the first " + label(singular(child.slug))}))
        return subtasks

    def _find_then_get(self, sandbox, rng, plan):
        t = rng.choice([t for t in self.tables.values() if self.unique_text[t.name]] or [None])
        if t is None or len(t.primary_key) != 1:
            raise Infeasible("needs a unique text column and a single key")
        row, slot, searched = self._parent_by_text(sandbox, rng, t, plan)
        pk = t.primary_key[0].param
        plan.run(self._tool("get_", t), {pk: ref(0, 0, pk)})
        f = self._field(rng, t, row, exclude={searched})
        return [Subtask("find", label(self._entity(t)), [0], id_slots=[slot], report=[plan.report(label(pk), 0, 0, pk)]),
                Subtask("lookup", label(self._entity(t)), [1], report=[plan.report(label(f.param), 1, f.param)])]

    # ---- hard -----------------------------------------------------------------------------------
    def _write_value(self, rng, t: Table, row: dict, tool: SqlTool, plan: _Plan) -> tuple[Column, str]:
        unique = {c.name for c in self.unique_text.get(t.name, [])}
        fk_cols = {c for fk in t.foreign_keys for c in fk.columns}
        options = [c for c in t.columns if not c.pk_index and c.name not in unique | fk_cols
                   and c.param in tool.parameters["properties"] and row.get(c.param) is not None]
        if not options:
            raise Infeasible("no updatable column")
        col = rng.choice(options)
        slot = f"new {label(col.param)}"
        plan.facts[slot] = self._new_value(rng, t, col, row[col.param], tool)
        return col, slot

    def _update_child(self, sandbox, rng, plan):
        child, _fk, _parent, subtasks = self._children_setup(sandbox, rng, plan)
        if len(child.primary_key) != 1:
            raise Infeasible("needs a single child key")
        pk = child.primary_key[0].param
        target = rng.choice(plan.results[1])
        update = self._tool("update_", child)
        if update is None:
            raise Infeasible("no update tool")
        col, slot = self._write_value(rng, child, target, update, plan)
        pick = ref(1, {"$match": {pk: target[pk]}}, pk)
        plan.run(update, {pk: pick, col.param: fact(slot)})
        plan.run(self._tool("get_", child), {pk: pick})
        entity = label(self._entity(child))
        subtasks += [Subtask("update", entity, [2], value_slots=[slot], report=[plan.report(label(col.param), 2, col.param)],
                             detail={"field": label(col.param), "key": f"{label(pk)} {target[pk]}"}),
                     Subtask("verify", entity, [3], report=[plan.report(label(col.param), 3, col.param)],
                             detail={"field": label(col.param), "key": f"{label(pk)} {target[pk]}"})]
        return subtasks

    def _create_child(self, sandbox, rng, plan):
        child, fk, parent, subtasks = self._children_setup(sandbox, rng, plan)
        create = self._tool("create_", child)
        if create is None or len(child.primary_key) != 1:
            raise Infeasible("no create tool")
        template = rng.choice(plan.results[1])
        fc = child.column(fk.columns[0])
        unique = {c.param for c in child.columns if c.unique}
        args, value_slots = {fc.param: ref(0, 0, parent.column(fk.ref_columns[0]).param)}, []
        for name in create.parameters["required"]:
            if name in args:
                continue
            value = template.get(name)
            if value is None:
                raise Infeasible("template row lacks a required value")
            if name in unique:
                value = fresh_like(rng, value)
            slot = f"{label(name)} for the new record"
            plan.facts[slot] = value
            args[name] = fact(slot)
            value_slots.append(slot)
        created = plan.run(create, args)
        plan.run(self._list_tool(child, fk), {fc.param: ref(0, 0, parent.column(fk.ref_columns[0]).param),
                                              "max_results": MAX_RESULTS})
        pk = child.primary_key[0].param
        entity = label(self._entity(child))
        subtasks += [Subtask("create", entity, [2], value_slots=value_slots,
                             report=[plan.report(f"new {label(pk)}", 2, pk)]),
                     Subtask("verify", entity, [3], report=[plan.report(f"number of {entity} records now", 3, "$len")],
                             detail={"key": f"{label(pk)} {created[pk]}"})]
        return subtasks

    def _delete_child(self, sandbox, rng, plan):
        child, fk, parent, subtasks = self._children_setup(sandbox, rng, plan, min_children=2)
        delete = self._tool("delete_", child)
        if delete is None or len(child.primary_key) != 1:
            raise Infeasible("no delete tool")
        pk = child.primary_key[0].param
        target = rng.choice(plan.results[1])
        plan.run(delete, {pk: ref(1, {"$match": {pk: target[pk]}}, pk)})
        fc = child.column(fk.columns[0])
        plan.run(self._list_tool(child, fk), {fc.param: ref(0, 0, parent.column(fk.ref_columns[0]).param),
                                              "max_results": MAX_RESULTS})
        entity = label(self._entity(child))
        subtasks += [Subtask("delete", entity, [2], report=[plan.report(f"deleted {label(pk)}", 2, pk)],
                             detail={"key": f"{label(pk)} {target[pk]}"}),
                     Subtask("verify", entity, [3], report=[plan.report(f"number of {entity} records now", 3, "$len")],
                             detail={"key": f"{label(pk)} {target[pk]}"})]
        return subtasks

    def _find_update(self, sandbox, rng, plan):
        subtasks = self._find_then_get(sandbox, rng, plan)
        t = next(t for t in self.tables.values() if self._entity(t) == subtasks[0].entity.replace(" ", "_"))
        pk = t.primary_key[0].param
        update = self._tool("update_", t)
        if update is None:
            raise Infeasible("no update tool")
        col, slot = self._write_value(rng, t, plan.results[1], update, plan)
        plan.run(update, {pk: ref(0, 0, pk), col.param: fact(slot)})
        plan.run(self._tool("get_", t), {pk: ref(0, 0, pk)})
        key = f"{label(pk)} {plan.results[1][pk]}"
        subtasks += [Subtask("update", subtasks[0].entity, [2], value_slots=[slot],
                             report=[plan.report(label(col.param), 2, col.param)],
                             detail={"field": label(col.param), "key": key}),
                     Subtask("verify", subtasks[0].entity, [3], report=[plan.report(label(col.param), 3, col.param)],
                             detail={"field": label(col.param), "key": key})]
        return subtasks

    # ---- entry point ----------------------------------------------------------------------------
    def generate(self, sandbox: Sandbox, rng: random.Random, task_id: str, rejects: dict[str, int],
                 prior: list[Task] | None = None) -> Task | None:
        """One task grounded in `sandbox`'s current state; its gold plan is applied to `sandbox`.
        (`prior`: the dialogue's earlier tasks; schema tasks are independent of them.)"""
        difficulty = rng.choices(DIFFICULTIES, weights=self.weights)[0]
        for _ in range(MAX_ATTEMPTS):
            template = rng.choice(self.templates[difficulty])
            plan = _Plan(sandbox, [], [], {})
            try:
                with sandbox.attempt():
                    subtasks = template(sandbox, rng, plan)
            except Infeasible as exc:
                key = f"{template.__name__.strip('_')}: {str(exc).split(':')[0]}"
                rejects[key] = rejects.get(key, 0) + 1
                continue
            task = Task(id=task_id, domain=self.domain.name, difficulty=difficulty,
                        template=template.__name__.strip("_"), goal="", steps=plan.steps,
                        subtasks=subtasks, facts=plan.facts)
            task.goal = describe_goal(task)
            return task
        return None
