"""The generation config, read once: which keys define a run, which roles are LLMs, and the checks
that turn a bad value or combination into one line naming what is wrong."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from toolturn.core.checks import (
    BOOL,
    INT_RANGE,
    KIND,
    LOGGER,
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
    require_set,
)
from toolturn.core.endpoints import CACHE_KNOBS, ENDPOINT_KEYS, parse_endpoints, required_keys
from toolturn.core.errors import ToolturnError
from toolturn.core.policy import read_policy_file
from toolturn.generate import paraphrase

# Every top-level key is one of two kinds. IDENTITY_KEYS define which dialogues a run keeps: a resume must
# agree on them (and on the content of the files in IDENTITY_FILES). SAFE_KEYS change how fast or where
# the run goes, never its records: they may differ between a run and its resumption (config.yaml keeps
# the first session's values). tests/test_resume.py checks that every key is one or the other.
IDENTITY_KEYS = ("pipeline", "tasks", "domain", "roles", "tools", "seed", "num_dialogues", "workers", "prefix",
                 "tools_per_dialogue", "max_messages", "max_dialogue_bytes", "llm", "policy", "paraphrase")
SAFE_KEYS = ("concurrency", "worker_index", "processes", "out_dir", "shard_size", "max_drop_streak", "progress", "verbose",
             "logger")
IDENTITY_FILES = ("policy.file", "prefix")  # a file whose content, not only its path, defines the run
# Within `llm`, what only says where an endpoint is and how patiently to call it: a resume may move the
# endpoint (a new server job on another node) or change these. A timeout or failed retries stop the run;
# they never drop a dialogue, so they cannot change which are kept.
SAFE_ENDPOINT_KEYS = ("base_url", "api_key_env", "max_concurrency", "timeout_s", "max_retries", "backoff_s",
                      "max_wait_s", "replicas", "replica_max_concurrency", "probe_s", "adaptive", "min_concurrency",
                      "latency_tolerance", *CACHE_KNOBS)  # a cached answer is the one the dialogue got before
ROLES = ("task_generator", "user", "assistant", "judge")
# Keys the code reads that a config file may leave out, so that `+key=value` may add them (core/cli.precheck);
# any other added key is an error: nothing would read it. `*` matches one level.
ADDABLE_KEYS = (
    "domain.name", "domain.description", "domain.path", "domain.seed_tools", "domain.source", "domain.data_dir",
    "domain.policy_files", "domain.questions", "domain.max_questions_for_tools",
    "tools.llm_sql_tools", "tools.simulator.*", "policy.file",
    *(f"roles.*.{k}" for k in ("kind", "endpoint", "slip_rate", "prompt", "temperature", "top_p", "max_tokens")),
    "llm.endpoints.*",  # a whole new endpoint: {server, base_url, model, ...} (core/endpoints.py parses it)
    *(f"llm.endpoints.*.{k}" for k in ENDPOINT_KEYS),
    "logger.mode", "logger.project", "logger.entity", "logger.group",
)


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
    "worker_index": integer(0), "processes": integer(1), "shard_size": integer(1), "tools_per_dialogue": integer(0),
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
    "policy.file": maybe(Check("null or the path of a YAML/JSON policy file",
                               lambda v: v is None or (isinstance(v, str) and bool(v.strip())))),
    "domain.questions": maybe(integer(1)), "domain.max_questions_for_tools": maybe(integer(1)),
    "paraphrase.enabled": BOOL, **{f"paraphrase.{k}": c for k, c in SAMPLING.items()},
    "paraphrase.max_length_ratio": POSITIVE, "paraphrase.context_messages": integer(0),
    **LOGGER,
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
    if plain["worker_index"] + plain["processes"] > plain["workers"]:
        raise ToolturnError(f"processes={plain['processes']} from worker_index={plain['worker_index']} runs workers "
                            f"past workers={plain['workers']}: set workers to at least "
                            f"{plain['worker_index'] + plain['processes']}")


def file_digests(cfg: DictConfig) -> dict[str, str | None]:
    """sha256 of each IDENTITY_FILES file the config names (None: none named)."""
    out = {}
    for key in IDENTITY_FILES:
        path = OmegaConf.select(cfg, key)
        try:
            out[key] = hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest() if path else None
        except OSError as exc:
            raise ToolturnError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    return out


def identity_values(plain: dict) -> dict:
    """The IDENTITY_KEYS values of a plain config (this command's, or a run's config.yaml) that a resume must
    agree on: every endpoint without its SAFE_ENDPOINT_KEYS, each key at its default where a config leaves it out
    (a run made before the key existed)."""
    out = {k: copy.deepcopy(plain.get(k)) for k in IDENTITY_KEYS}
    endpoints = (out["llm"] or {}).get("endpoints") or {}
    for name, spec in parse_endpoints(endpoints, "llm.endpoints").items():
        endpoints[name] = {k: v for k, v in asdict(spec).items() if k not in SAFE_ENDPOINT_KEYS}
    if not (out["paraphrase"] or {}).get("enabled"):  # off (or a run made before the pass existed): no knob matters
        out["paraphrase"] = None
    return out


def validate(cfg: DictConfig) -> None:
    check_values(cfg)
    if cfg.policy.get("file"):
        read_policy_file(cfg.policy.file)  # its names are checked against the domain once it is set up
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
    parse_endpoints(cfg.llm.endpoints, "llm.endpoints")  # every endpoint, by the one schema: a bad key is one line
    if kinds["user"] != kinds["assistant"]:
        raise ToolturnError("the rule-based user and oracle assistant talk through dialogue acts, so they come as a "
                            f"pair: roles.user.kind={kinds['user']} but roles.assistant.kind={kinds['assistant']}")
    if cfg.domain.kind == "synthetic" and cfg.tools.mode != "simulated":
        raise ToolturnError("domain=synthetic has no database; it needs tools=simulated")
    endpoints = {role: spec.get("endpoint") for role, spec in llm_roles(cfg).items()}
    unnamed = [role for role, name in endpoints.items() if not name]
    if unnamed:
        raise ToolturnError(f"the LLM {unnamed[0]} names no endpoint; set its endpoint to one of llm.endpoints "
                            f"{sorted(cfg.llm.endpoints)}")
    require_set(cfg, required_keys("llm.endpoints", cfg.llm.endpoints, endpoint_names(cfg)))


def endpoint_names(cfg: DictConfig) -> list[str]:
    """The endpoints a run uses: its LLM roles' and the paraphrase pass's (checked by `validate`)."""
    names = [spec.get("endpoint") for spec in llm_roles(cfg).values()]
    ours = paraphrase.check_config(cfg)
    return names + ([ours] if ours else [])
