"""The generation config, read once: which keys define a run, which roles are LLMs, and the checks
that turn a bad combination into one line naming what is wrong."""

from __future__ import annotations

from omegaconf import DictConfig
from toolturn.core.errors import ToolturnError

# Keys that define a run's content; a resumed run must agree on them.
IDENTITY_KEYS = ("pipeline", "tasks", "domain", "roles", "tools", "seed", "num_dialogues", "workers", "prefix",
                 "tools_per_dialogue", "max_messages", "llm")
ROLES = ("task_generator", "user", "assistant", "judge")


def llm_roles(cfg: DictConfig) -> dict[str, DictConfig]:
    """role -> its config node ({endpoint, temperature, ...}) for every role an LLM plays in this run."""
    out = {role: cfg.roles[role] for role in ROLES if cfg.roles[role].kind == "llm"}
    if cfg.tools.mode == "simulated":
        out["tool_simulator"] = cfg.tools.simulator
    return out


def quota(total: int, workers: int, index: int) -> int:
    return total // workers + (1 if index < total % workers else 0)


def validate(cfg: DictConfig) -> None:
    for key in ("num_dialogues", "concurrency", "workers", "shard_size"):
        if not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise ToolturnError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if not 0 <= cfg.worker_index < cfg.workers:
        raise ToolturnError(f"worker_index must be in [0, {cfg.workers}), got {cfg.worker_index}")
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
