"""Policies as code: one declaration per domain gives both the system-prompt text and the rules the
policy checker (`core/policy_check.py`) applies to every dialogue.

A `Policy` is data: who the customer is and how they identify (`Identity`), which records may be
written in which states (`StateRule`), which fields are private, how many records one reply may
disclose, refusal reasons the assistant gives, and further text-only lines. `Policy.rules()` turns
it into rule objects; each writes its own policy line and checks a dialogue trace.

A bring-your-own database gets `GENERIC`, optionally extended by a small YAML/JSON file
(`policy.file`, see `load_policy_file`).
"""

from __future__ import annotations

import difflib
import json
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from toolturn.core.errors import ToolturnError


@dataclass(frozen=True)
class Identity:
    table: str  # the owner table (customers, passengers)
    key: str  # the owner key as it appears in arguments and rows of owned tables (customer_id)
    tools: dict[str, str]  # identification tool -> the argument whose value the user must have given
    who: str = "customer"
    by: str = "their email address"  # how the user identifies, in words
    records: str = "account details"  # what may not be read or changed before identification


@dataclass(frozen=True)
class StateRule:
    table: str
    column: str  # a column (parameter name) of `table`
    allowed: tuple[str, ...]  # states in which a write may touch the record
    tools: tuple[str, ...] = ()  # write tools the rule governs by name, whatever table they write
    text: str = ""  # the policy line; default: written from the fields
    # tables whose records belong to a `table` record (through foreign keys): every write on one of them is
    # checked against the state of the `table` record it belongs to (with `tools` and `tables` both empty:
    # every write on `table` itself)
    tables: tuple[str, ...] = ()

    def governs(self, tool: str, written: str) -> bool:
        """Whether a write by `tool` on a record of table `written` falls under this rule."""
        if not self.tools and not self.tables:
            return written == self.table
        return tool in self.tools or written in self.tables


@dataclass(frozen=True)
class Policy:
    name: str
    preamble: str
    identity: Identity | None = None
    states: tuple[StateRule, ...] = ()
    private: dict[str, tuple[str, ...]] = field(default_factory=dict)  # table -> private fields
    bulk_limit: int = 20  # records of one tool result that one reply may disclose
    reasons: dict[str, str] = field(default_factory=dict)  # refusal id -> the explanation
    notes: tuple[str, ...] = ()  # further lines, text only

    def rules(self) -> list["Rule"]:
        from toolturn.core.policy_check import (
            AllowedStates,
            ConfirmWrites,
            IdentifyFirst,
            NoBulkDisclosure,
            NoForeignData,
            OwnRecordsOnly,
        )
        out: list[Rule] = []
        if self.identity is not None:
            out += [IdentifyFirst(self), OwnRecordsOnly(self)]
        out += [AllowedStates(self, s) for s in self.states]
        out += [ConfirmWrites(self)]
        if self.identity is not None:
            out.append(NoForeignData(self))
        out.append(NoBulkDisclosure(self))
        return out

    def text(self) -> str:
        """The policy as the assistant reads it in its system prompt."""
        lines = [self.preamble] + [f"- {r.text()}" for r in self.rules()] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def reason(self, key: str, **values: Any) -> str:
        return self.reasons.get(key, "the policy does not allow this").format(**values)


class Rule:
    """One machine-checkable rule: its policy line and its check over a dialogue trace."""
    name = "rule"

    def __init__(self, policy: Policy):
        self.policy = policy

    def text(self) -> str:
        raise NotImplementedError

    def check(self, trace) -> list:
        raise NotImplementedError


GENERIC = Policy(
    name="generic",
    preamble="You are a customer-service assistant with access to the organisation's database through tools.",
    notes=("Use the tools to look up facts; never guess values.",
           "Ask the user for any identifier you need instead of inventing one.",
           "If a tool returns an error, say so plainly and suggest a next step."),
)

FILE_KEYS = ("preamble", "identity", "states", "private", "bulk_limit", "reasons", "notes")
IDENTITY_FIELDS = ("table", "key", "tools", "who", "by", "records")
STATE_FIELDS = ("table", "column", "allowed", "tools", "tables", "text")


@dataclass(frozen=True)
class DomainFacts:
    """What a policy file is checked against: the domain's tables, tools and refusal tasks."""
    tables: dict[str, set[str]]  # table -> its column parameter names
    parents: dict[str, set[str]]  # table -> the tables its foreign keys reference
    tools: dict[str, set[str]]  # tool -> its argument names
    reasons: dict[str, set[str]]  # refusal reason id -> the values every task refusing with it fills in

    def reaches(self, table: str, target: str) -> bool:
        """Whether a record of `table` belongs to a record of `target` through foreign keys."""
        seen, todo = {table}, [table]
        while todo:
            for parent in self.parents.get(todo.pop(), ()):
                if parent == target:
                    return True
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return False


def _placeholders(template: str, where: str) -> set[str]:
    """The {name} fields of a reason; anything `str.format` could fail on at run time is an error now."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ToolturnError(f"{where}: not a valid template ({exc})") from None
    names = set()
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if not name or name.isdigit() or any(c in name for c in ".[]") or spec or conversion:
            raise ToolturnError(f"{where}: only plain {{name}} placeholders are allowed, got {{{name}"
                                f"{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}")
        names.add(name)
    return names


class _FileShape:
    """The domain-independent checks of a policy file: each entry's type, no unknown keys."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, what: str) -> ToolturnError:
        return ToolturnError(f"{self.where}: {what}")

    def mapping(self, v: Any, what: str, keys: tuple[str, ...] | None = None) -> dict:
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise self.fail(f"{what} must be a mapping")
        unknown = sorted(set(v) - set(keys)) if keys is not None else []
        if unknown:
            raise self.fail(f"{what} has unknown key '{unknown[0]}'{_close(unknown[0], keys)}; expected keys among "
                            f"{list(keys)}")
        return v

    def text(self, v: Any, what: str) -> str:
        if not isinstance(v, str) or not v.strip():
            raise self.fail(f"{what} must be non-empty text")
        return v

    def texts(self, v: Any, what: str, empty: bool = False) -> list[str]:
        if not isinstance(v, list) or not (v or empty) or not all(isinstance(x, str) and x for x in v):
            raise self.fail(f"{what} must be a {'' if empty else 'non-empty '}list of names or texts")
        return v

    def check(self, data: dict) -> None:
        self.mapping(data, "the file", FILE_KEYS)
        if "preamble" in data:
            self.text(data["preamble"], "preamble")
        if "notes" in data:
            self.texts(data["notes"], "notes")
        if "bulk_limit" in data and not (type(data["bulk_limit"]) is int and data["bulk_limit"] >= 1):
            raise self.fail("bulk_limit must be a positive integer")
        for rid, template in self.mapping(data.get("reasons", {}), "reasons").items():
            _placeholders(self.text(template, f"reasons.{rid}"), f"{self.where}: reasons.{rid}")
        for t, cols in self.mapping(data.get("private", {}), "private").items():
            self.texts(cols, f"private.{t}")
        if "identity" in data:
            d = self.mapping(data["identity"], "identity", IDENTITY_FIELDS)
            self.text(d.get("table"), "identity.table")
            tools = self.mapping(d.get("tools"), "identity.tools")
            if not tools or not all(isinstance(a, str) and a for a in tools.values()):
                raise self.fail("identity.tools must map at least one tool to the argument the user's value goes in")
            for key in ("key", "who", "by", "records"):
                if key in d:
                    self.text(d[key], f"identity.{key}")
        if "states" in data:
            if not isinstance(data["states"], list):
                raise self.fail("states must be a list of rules")
            for i, rule in enumerate(data["states"]):
                r = self.mapping(rule, f"states[{i}]", STATE_FIELDS)
                for key in ("table", "column"):
                    self.text(r.get(key), f"states[{i}].{key}")
                self.texts(r.get("allowed"), f"states[{i}].allowed")
                for key in ("tools", "tables"):
                    if key in r:
                        self.texts(r[key], f"states[{i}].{key}", empty=True)
                if "text" in r:
                    self.text(r["text"], f"states[{i}].text")


def read_policy_file(path: Any) -> dict:
    """A policy file's content, checked for everything that needs no domain (readable UTF-8 YAML or JSON, known
    keys, each value's type, reason templates): one ToolturnError naming the problem."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise ToolturnError(f"policy.file must be the path of a YAML or JSON file, got {path!r}")
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ToolturnError(f"policy.file: cannot read {p}: {exc.strerror or exc}") from None
    where = f"policy.file {p}"
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ToolturnError(f"{where}: not UTF-8 text (a binary file?)") from None
    except yaml.YAMLError as exc:
        raise ToolturnError(f"{where}: not YAML/JSON ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    _FileShape(where).check(data)
    return data


class _DomainNames:
    """The domain-dependent checks of a policy file: every name it uses, against `facts`."""

    def __init__(self, where: str, facts: DomainFacts):
        self.where, self.facts = where, facts

    def fail(self, what: str) -> ToolturnError:
        return ToolturnError(f"{self.where}: {what}")

    def table(self, name: str, what: str) -> str:
        if name not in self.facts.tables:
            raise self.fail(f"{what} names unknown table {name!r}{_close(name, self.facts.tables)}; tables: "
                            f"{sorted(self.facts.tables)}")
        return name

    def column(self, table: str, name: str, what: str) -> str:
        if name not in self.facts.tables[table]:
            raise self.fail(f"{what} names unknown column {name!r} of {table}{_close(name, self.facts.tables[table])}")
        return name

    def tools(self, names: list[str], what: str) -> tuple[str, ...]:
        unknown = [n for n in names if n not in self.facts.tools]
        if unknown:
            raise self.fail(f"{what} names unknown tool {unknown[0]!r}{_close(unknown[0], self.facts.tools)}")
        return tuple(names)

    def reasons(self, reasons: dict[str, str]) -> dict[str, str]:
        for rid, template in reasons.items():
            fills = self.facts.reasons.get(rid)
            if fills is None:
                raise self.fail(f"reasons.{rid}: no refusal task of this domain gives that reason; reasons: "
                                f"{sorted(self.facts.reasons)}")
            unknown = sorted(_placeholders(template, f"{self.where}: reasons.{rid}") - fills)
            if unknown:
                raise self.fail(f"reasons.{rid}: unknown placeholder {{{unknown[0]}}}{_close(unknown[0], fills)}; "
                                f"its tasks fill {sorted(fills)}")
        return reasons

    def private(self, private: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
        return {self.table(t, "private"): tuple(self.column(t, c, f"private.{t}") for c in cols)
                for t, cols in private.items()}

    def identity(self, d: dict) -> Identity:
        t = self.table(d["table"], "identity.table")
        for tool, arg in d["tools"].items():
            self.tools([tool], "identity.tools")
            if arg not in self.facts.tools[tool]:
                raise self.fail(f"identity.tools: {tool} has no argument {arg!r}{_close(arg, self.facts.tools[tool])}; "
                                f"its arguments: {sorted(self.facts.tools[tool])}")
        key = d.get("key") or f"{t.rstrip('s')}_id"
        if not any(key in cols for cols in self.facts.tables.values()):
            raise self.fail(f"identity.key {key!r} is a column of no table")
        return Identity(table=t, key=key, tools=dict(d["tools"]), who=d.get("who", "customer"),
                        by=d.get("by", "their id"), records=d.get("records", "their records"))

    def state(self, i: int, s: dict) -> StateRule:
        t = self.table(s["table"], f"states[{i}].table")
        governed = tuple(self.table(x, f"states[{i}].tables") for x in s.get("tables", []))
        for x in governed:
            if x != t and not self.facts.reaches(x, t):
                raise self.fail(f"states[{i}].tables: a {x} record belongs to no {t} record (no foreign-key path)")
        return StateRule(t, self.column(t, s["column"], f"states[{i}].column"), tuple(s["allowed"]),
                         self.tools(s.get("tools", []), f"states[{i}].tools"), s.get("text", ""), governed)


def load_policy_file(path: Any, base: Policy, facts: DomainFacts) -> Policy:
    """`base` extended by a user-written policy file (YAML or JSON), every name in it checked against the
    domain (`facts`) before anything runs. Example:

        notes: ["Never discuss invoices older than a year."]
        bulk_limit: 5
        private: {customers: [email, phone]}
        identity: {table: customers, key: customer_id, tools: {search_customers: email}, by: "their email"}
        states: [{table: orders, column: status, allowed: [open], tools: [update_order], tables: [order_lines]}]
        reasons: {state: "order {order number} is {status}"}   # only ids and {values} the domain's refusal tasks fill
    """
    data = read_policy_file(path)
    names = _DomainNames(f"policy.file {Path(path).expanduser()}", facts)
    out = replace(base, preamble=data.get("preamble", base.preamble), notes=base.notes + tuple(data.get("notes", ())),
                  bulk_limit=data.get("bulk_limit", base.bulk_limit),
                  reasons={**base.reasons, **names.reasons(data.get("reasons", {}))},
                  private={**base.private, **names.private(data.get("private", {}))},
                  states=base.states + tuple(names.state(i, s) for i, s in enumerate(data.get("states", []))))
    return replace(out, identity=names.identity(data["identity"])) if "identity" in data else out


def _close(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(policy: Policy) -> str:
    """The policy's data as one JSON line (written next to the domain in the run dir)."""
    def plain(v):
        if isinstance(v, (Identity, StateRule)):
            return {k: plain(x) for k, x in v.__dict__.items()}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return json.dumps({k: plain(v) for k, v in policy.__dict__.items()}, ensure_ascii=False)


def domain_facts(domain) -> DomainFacts:
    """The names a policy file of `domain` may use (a `core.domains.Domain`)."""
    schema = domain.schema
    tables = {n: {c.param for c in t.columns} for n, t in schema.tables.items()} if schema else {}
    parents = {n: {fk.ref_table for fk in t.foreign_keys} for n, t in schema.tables.items()} if schema else {}
    tools = {t["function"]["name"]: set((t["function"].get("parameters") or {}).get("properties") or {})
             for t in domain.toolset}
    return DomainFacts(tables, parents, tools, {k: set(v) for k, v in domain.refusal_slots.items()})


def policy_for(domain, file: Any = None) -> Policy:
    """The domain's policy (`Domain.rules`), extended by the user's policy file if one is given."""
    base = getattr(domain, "rules", None) or GENERIC
    if file is None or file == "":
        return base
    return load_policy_file(file, base, domain_facts(domain))
