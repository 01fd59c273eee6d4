"""What the assistant did, beside whether it succeeded: rates read from the same sample rows.

A 135M model that never calls a tool scores 0 like the do-nothing floor, and so does one that calls the
right tools without asking first; the binary reward cannot tell them apart, these rates can. One function
per rate; each is a share over what it applies to, returned with that count, and None over nothing (never
a 0 for "did not apply"):

- `tool_call_turns`: assistant turns that carry a well-formed tool call (a name and a JSON object of
  arguments), over all assistant turns;
- `valid_tool_calls`: tool calls that name a tool of the domain with arguments its schema accepts
  (`core/sqlenv.check_arguments`, what the sandbox checks before running a call), over all tool calls;
- `identified_first`: samples that touched a customer-owned record in which the customer was identified
  first (the policy's `identity_required` rule finds nothing), over the samples that touched one;
- `confirmed_writes`: samples with a write call in which every write followed a proposal stating it and a
  yes (the policy's `unconfirmed_write` rule finds nothing), over the samples with a write call.

The last two replay the calls through `core/policy_check.build_trace`, as the reward's policy check does.
Only our own episodes are read (eval=sql_tau, whose suite gives its `World`): τ² and BFCL rows are their
packages' transcripts, scored by their own checkers, so every rate there is n/a. The reward parts' rates
are `parts` beside these (`report.checkpoint_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolturn.core.errors import ToolCallError
from toolturn.core.policy import Policy
from toolturn.core.policy_check import ConfirmWrites, IdentifyFirst, Trace, build_trace
from toolturn.core.sqlenv import SqlDomain, SqlTool, check_arguments
from toolturn.core.sqlschema import Schema

RATES = ("tool_call_turns", "valid_tool_calls", "identified_first", "confirmed_writes")


@dataclass(frozen=True)
class World:
    """What the rates need of a suite's world: the domain's policy, tools, schema and database."""
    policy: Policy
    tools: dict[str, SqlTool]
    schema: Schema | None
    env: SqlDomain


@dataclass(frozen=True)
class Rate:
    value: float | None  # None when nothing applied
    n: int  # what the share is over

    def to_dict(self) -> dict:
        return {"value": self.value, "n": self.n}


def _rate(hits: list[bool]) -> Rate:
    return Rate(sum(hits) / len(hits) if hits else None, len(hits))


def _calls(messages: list[dict]) -> list[dict]:
    """The `function` ({name, arguments}) of every tool call in `messages`."""
    return [c.get("function") or {} for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]


def _well_formed(call: dict) -> bool:
    return isinstance(call.get("name"), str) and call["name"] != "" and isinstance(call.get("arguments"), dict)


def tool_call_turns(episodes: list[list[dict]]) -> Rate:
    return _rate([any(map(_well_formed, _calls([m]))) for messages in episodes for m in messages
                  if m["role"] == "assistant"])


def _valid(call: dict, tools: dict[str, SqlTool]) -> bool:
    tool = tools.get(call.get("name"))
    if tool is None:
        return False
    try:
        check_arguments(tool, call.get("arguments"))
    except ToolCallError:
        return False
    return True


def valid_tool_calls(episodes: list[list[dict]], tools: dict[str, SqlTool]) -> Rate:
    return _rate([_valid(call, tools) for messages in episodes for call in _calls(messages)])


def _touches_owned(trace: Trace, policy: Policy) -> bool:
    """A call other than an identification touched a customer-owned record (what identity_required reads)."""
    return any(c.name not in policy.identity.tools and
               (c.owners or (c.tool is not None and c.tool.table in trace.owned_tables)) for c in trace.calls)


def identified_first(traces: list[Trace], policy: Policy) -> Rate:
    if policy.identity is None:
        return _rate([])
    rule = IdentifyFirst(policy)
    return _rate([not rule.check(t) for t in traces if _touches_owned(t, policy)])


def confirmed_writes(traces: list[Trace], policy: Policy) -> Rate:
    rule = ConfirmWrites(policy)
    return _rate([not rule.check(t) for t in traces
                  if any(c.tool is not None and c.tool.effect == "write" for c in t.calls)])


def _start(messages: list[dict]) -> int:
    """The first message of the episode: the one after the system prompt."""
    return next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))


def behaviour(rows: list[dict], world: World | None) -> dict[str, dict]:
    """Every rate over the scored `rows` of one checkpoint, as {rate: {value, n}}."""
    if world is None:
        return {name: _rate([]).to_dict() for name in RATES}
    episodes = [m[_start(m):] for r in rows if r.get("infra_error") is None and (m := r.get("messages"))]
    # a replay only where there are calls to replay: without any, no record was touched and nothing written
    traces = [build_trace(world.policy, m, 0, world.tools, world.schema, world.env) for m in episodes if _calls(m)]
    rates = {"tool_call_turns": tool_call_turns(episodes), "valid_tool_calls": valid_tool_calls(episodes, world.tools),
             "identified_first": identified_first(traces, world.policy),
             "confirmed_writes": confirmed_writes(traces, world.policy)}
    return {name: rate.to_dict() for name, rate in rates.items()}
