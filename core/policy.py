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

import json
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
    tools: tuple[str, ...] = ()  # the write tools the rule governs (empty: every write on `table`)
    text: str = ""  # the policy line; default: written from the fields


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

FILE_KEYS = {"preamble", "identity", "states", "private", "bulk_limit", "reasons", "notes"}


def load_policy_file(path: str | Path, base: Policy, tables: dict[str, set[str]], tools: set[str]) -> Policy:
    """`base` extended by a user-written policy file (YAML or JSON), checked against the domain's
    tables (name -> parameter names) and tool names. Example:

        notes: ["Never discuss invoices older than a year."]
        bulk_limit: 5
        private: {customers: [email, phone]}
        identity: {table: customers, key: customer_id, tools: {search_customers: email}, by: "their email"}
        states: [{table: orders, column: status, allowed: [open], tools: [update_order]}]
    """
    p = Path(path).expanduser()
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ToolturnError(f"policy.file: cannot read {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ToolturnError(f"policy.file {p}: not YAML/JSON ({str(exc).splitlines()[0]})") from None
    if data is None:
        return base
    if not isinstance(data, dict) or set(data) - FILE_KEYS:
        raise ToolturnError(f"policy.file {p}: expected a mapping with keys among {sorted(FILE_KEYS)}"
                            + (f", got {sorted(set(data) - FILE_KEYS)}" if isinstance(data, dict) else ""))
    where = f"policy.file {p}"

    def table(name: Any, what: str) -> str:
        if name not in tables:
            raise ToolturnError(f"{where}: {what} names unknown table {name!r}; tables: {sorted(tables)}")
        return name

    def column(t: str, name: Any, what: str) -> str:
        if name not in tables[t]:
            raise ToolturnError(f"{where}: {what} names unknown column {name!r} of {t}")
        return name

    def tool_names(names: Any, what: str) -> tuple[str, ...]:
        names = list(names or [])
        unknown = [n for n in names if n not in tools]
        if unknown:
            raise ToolturnError(f"{where}: {what} names unknown tool(s) {unknown}")
        return tuple(names)

    def strings(v: Any, what: str) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ToolturnError(f"{where}: {what} must be a list of strings")
        return v

    out = base
    try:
        if "preamble" in data:
            out = replace(out, preamble=str(data["preamble"]))
        if "notes" in data:
            out = replace(out, notes=out.notes + tuple(strings(data["notes"], "notes")))
        if "bulk_limit" in data:
            if not isinstance(data["bulk_limit"], int) or data["bulk_limit"] < 1:
                raise ToolturnError(f"{where}: bulk_limit must be a positive integer")
            out = replace(out, bulk_limit=data["bulk_limit"])
        if "reasons" in data:
            out = replace(out, reasons={**out.reasons, **{str(k): str(v) for k, v in dict(data["reasons"]).items()}})
        if "private" in data:
            private = dict(out.private)
            for t, cols in dict(data["private"]).items():
                private[table(t, "private")] = tuple(column(t, c, "private") for c in strings(cols, f"private.{t}"))
            out = replace(out, private=private)
        if "identity" in data:
            d = dict(data["identity"])
            t = table(d.get("table"), "identity.table")
            id_tools = dict(d.get("tools") or {})
            tool_names(id_tools, "identity.tools")
            if not id_tools:
                raise ToolturnError(f"{where}: identity.tools must map at least one tool to its argument")
            out = replace(out, identity=Identity(table=t, key=str(d.get("key") or f"{t.rstrip('s')}_id"),
                                                 tools={str(k): str(v) for k, v in id_tools.items()},
                                                 who=str(d.get("who", "customer")), by=str(d.get("by", "their id")),
                                                 records=str(d.get("records", "their records"))))
        if "states" in data:
            rules = []
            for i, s in enumerate(data["states"] or []):
                s = dict(s)
                t = table(s.get("table"), f"states[{i}].table")
                allowed = tuple(str(a) for a in strings(s.get("allowed"), f"states[{i}].allowed"))
                rules.append(StateRule(t, column(t, s.get("column"), f"states[{i}].column"), allowed,
                                       tool_names(s.get("tools"), f"states[{i}].tools"), str(s.get("text", ""))))
            out = replace(out, states=out.states + tuple(rules))
    except (TypeError, ValueError, AttributeError) as exc:
        raise ToolturnError(f"{where}: malformed entry ({exc})") from None
    return out


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


def policy_for(domain, file: str | None = None) -> Policy:
    """The domain's policy (`Domain.rules`), extended by the user's policy file if one is given."""
    base = getattr(domain, "rules", None) or GENERIC
    if not file:
        return base
    tables = {n: {c.param for c in t.columns} for n, t in domain.schema.tables.items()} if domain.schema else {}
    return load_policy_file(file, base, tables, {t["function"]["name"] for t in domain.toolset})
