"""The generation config, read once: which keys define a run, which roles are LLMs, and the checks
that turn a bad value or combination into one line naming what is wrong."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from toolturn.core.errors import ToolturnError

# Keys that define a run's content; a resumed run must agree on them.
IDENTITY_KEYS = ("pipeline", "tasks", "domain", "roles", "tools", "seed", "num_dialogues", "workers", "prefix",
                 "tools_per_dialogue", "max_messages", "llm", "policy")
ROLES = ("task_generator", "user", "assistant", "judge")
DIFFICULTIES = ("easy", "medium", "hard")


def llm_roles(cfg: DictConfig) -> dict[str, DictConfig]:
    """role -> its config node ({endpoint, temperature, ...}) for every role an LLM plays in this run."""
    out = {role: cfg.roles[role] for role in ROLES if cfg.roles[role].kind == "llm"}
    if cfg.tools.mode == "simulated":
        out["tool_simulator"] = cfg.tools.simulator
    return out


def quota(total: int, workers: int, index: int) -> int:
    return total // workers + (1 if index < total % workers else 0)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Check:
    """One knob's rule: what it must be (in words) and the test. An optional knob may be absent (it is
    read with a default, or only some group options define it); a required one may not."""
    must_be: str
    ok: Callable[[Any], bool]
    optional: bool = False


def maybe(check: Check) -> Check:
    return replace(check, optional=True)


def integer(lo: int) -> Check:
    words = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
    return Check(words, lambda v: _is_int(v) and v >= lo)


def _int_pair(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v) and 1 <= v[0] <= v[1]


PAIR = "two integers [lo, hi] with 1 <= lo <= hi"
INT_RANGE = Check(PAIR, _int_pair)
REVEAL = Check(f"'all' or {PAIR}", lambda v: v == "all" or _int_pair(v))
PROBABILITY = Check("a probability in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
POSITIVE = Check("a positive number", lambda v: _is_number(v) and v > 0)
BOOL = Check("true or false", lambda v: isinstance(v, bool))
KIND = Check("'rule' or 'llm'", lambda v: v in ("rule", "llm"))
WEIGHTS = Check(f"a mapping of {'/'.join(DIFFICULTIES)} to non-negative weights, not all zero",
                lambda v: isinstance(v, dict) and set(v) <= set(DIFFICULTIES)
                and all(_is_number(w) and w >= 0 for w in v.values()) and sum(v.values()) > 0)
SAMPLING = {"temperature": Check("a number in [0, 2]", lambda v: _is_number(v) and 0 <= v <= 2),
            "top_p": Check("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
            "max_tokens": integer(1)}

# Every numeric and boolean knob of the generation config (and the role kinds the checks below rely on).
# `*` matches every key at its level.
CHECKS: dict[str, Check] = {
    "seed": integer(0), "num_dialogues": integer(1), "concurrency": integer(1), "workers": integer(1),
    "worker_index": integer(0), "shard_size": integer(1), "tools_per_dialogue": integer(0),
    "max_messages": integer(1), "max_dialogue_bytes": maybe(integer(1)), "max_drop_streak": integer(1),
    "progress": BOOL, "verbose": BOOL,
    "pipeline.tasks_per_dialogue": INT_RANGE, "pipeline.user.reveal_per_turn": REVEAL,
    "pipeline.user.withhold_ids": PROBABILITY, "pipeline.user.confirm_prob": PROBABILITY,
    "pipeline.user.feedback": BOOL, "pipeline.user.close_message": BOOL,
    "tasks.difficulty": WEIGHTS,
    **{f"roles.{role}.kind": KIND for role in ROLES},
    "roles.*.slip_rate": maybe(PROBABILITY),
    **{f"roles.*.{k}": maybe(c) for k, c in SAMPLING.items()},
    **{f"tools.simulator.{k}": maybe(c) for k, c in SAMPLING.items()},
    "tools.llm_sql_tools": maybe(integer(0)),
    "domain.questions": maybe(integer(1)), "domain.max_questions_for_tools": maybe(integer(1)),
    "llm.endpoints.*.max_concurrency": integer(1), "llm.endpoints.*.timeout_s": POSITIVE,
    "llm.endpoints.*.max_retries": integer(0),
}


_ABSENT = object()


def _values(node: dict, parts: list[str], check: Check, prefix: str = ""):
    """(dotted key, value) for every key of `node` that the pattern `parts` matches; _ABSENT for a
    required key that is not there."""
    head, rest = parts[0], parts[1:]
    if head != "*" and head not in node:
        if not check.optional:
            yield f"{prefix}{head}", _ABSENT
        return
    for key in list(node) if head == "*" else [head]:
        full, value = f"{prefix}{key}", node[key]
        if not rest:
            yield full, value
        elif isinstance(value, dict):
            yield from _values(value, rest, check, f"{full}.")
        else:
            raise ToolturnError(f"{full} must be a mapping, got {value!r}")


def check_values(cfg: DictConfig) -> None:
    """Type and range of every knob in CHECKS, before anything runs."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ToolturnError(f"{getattr(exc, 'full_key', None) or 'config'}: {str(exc).splitlines()[0]}") from None
    for key in IDENTITY_KEYS:
        if key not in plain:
            raise ToolturnError(f"{key} is missing from the config")
    for pattern, check in CHECKS.items():
        for key, value in _values(plain, pattern.split("."), check):
            if value is _ABSENT:
                raise ToolturnError(f"{key} is missing from the config")
            if not check.ok(value):
                raise ToolturnError(f"{key} must be {check.must_be}, got {value!r}")
    if plain["worker_index"] >= plain["workers"]:
        raise ToolturnError(f"worker_index must be in [0, {plain['workers']}), got {plain['worker_index']}")


def validate(cfg: DictConfig) -> None:
    check_values(cfg)
    kinds = {role: cfg.roles[role].kind for role in ROLES}
    if cfg.tools.mode == "simulated" and kinds["task_generator"] == "rule":
        raise ToolturnError("tools=simulated needs LLM-written tasks (gold plans need executed tools): "
                            "use roles=llm or roles.task_generator.kind=llm")
    if cfg.tools.get("llm_sql_tools", 0) and kinds["task_generator"] != "llm":
        raise ToolturnError("tools.llm_sql_tools needs an LLM task generator (its endpoint writes the SQL tools): "
                            "use roles=llm or roles.task_generator.kind=llm")
    if kinds["task_generator"] == "llm":
        rule = [role for role in ("user", "assistant", "judge") if kinds[role] == "rule"]
        if rule:
            raise ToolturnError(f"LLM-written tasks have no gold plan, so the {', '.join(rule)} cannot be rule-based; "
                                f"use roles=llm")
    if kinds["user"] != kinds["assistant"]:
        raise ToolturnError("the rule-based user and oracle assistant talk through dialogue acts, so they come as a "
                            f"pair: roles.user.kind={kinds['user']} but roles.assistant.kind={kinds['assistant']}")
    if cfg.domain.kind == "synthetic" and cfg.tools.mode != "simulated":
        raise ToolturnError("domain=synthetic has no database; it needs tools=simulated")
