"""The generation config, read once: which keys define a run, which roles are LLMs, and the checks
that turn a bad value or combination into one line naming what is wrong."""

from __future__ import annotations

from omegaconf import DictConfig
from toolturn.core.checks import (
    BOOL,
    INT_RANGE,
    KIND,
    POSITIVE,
    PROBABILITY,
    REVEAL,
    SAMPLING,
    WEIGHTS,
    Check,
    check_table,
    integer,
    maybe,
    plain_config,
)
from toolturn.core.errors import ToolturnError

# Keys that define a run's content; a resumed run must agree on them.
IDENTITY_KEYS = ("pipeline", "tasks", "domain", "roles", "tools", "seed", "num_dialogues", "workers", "prefix",
                 "tools_per_dialogue", "max_messages", "llm", "policy")
ROLES = ("task_generator", "user", "assistant", "judge")


def llm_roles(cfg: DictConfig) -> dict[str, DictConfig]:
    """role -> its config node ({endpoint, temperature, ...}) for every role an LLM plays in this run."""
    out = {role: cfg.roles[role] for role in ROLES if cfg.roles[role].kind == "llm"}
    if cfg.tools.mode == "simulated":
        out["tool_simulator"] = cfg.tools.simulator
    return out


def quota(total: int, workers: int, index: int) -> int:
    return total // workers + (1 if index < total % workers else 0)


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
    "policy.mode": Check("'enforce' or 'report'", lambda v: v in ("enforce", "report")),
    "policy.refusal_share": PROBABILITY,
    "domain.questions": maybe(integer(1)), "domain.max_questions_for_tools": maybe(integer(1)),
    "llm.endpoints.*.max_concurrency": integer(1), "llm.endpoints.*.timeout_s": POSITIVE,
    "llm.endpoints.*.max_retries": integer(0),
}


def check_values(cfg: DictConfig) -> None:
    """Type and range of every knob in CHECKS, before anything runs."""
    plain = plain_config(cfg)
    for key in IDENTITY_KEYS:
        if key not in plain:
            raise ToolturnError(f"{key} is missing from the config")
    check_table(plain, CHECKS)
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
