"""`toolturn-eval`: the evaluation stage (a Hydra app).

    toolturn-eval eval=sql_tau domain=retail model=smollm2_135m checkpoints=[base,runs/train/x/merged] \
        n=4 num_tasks=20 seed=0 out_dir=OUT

Writes OUT/config.yaml (the resolved config of the latest run), OUT/identities.json (which model each
checkpoint label means), OUT/tasks.jsonl (the held-out tasks, once, with tasks.meta.json and
tasks.kinds.json), OUT/samples.jsonl (a row per checkpoint x task x sample), OUT/metrics.json,
OUT/report.md with OUT/pass_hat_k.png, and a W&B run (offline by default) that declares every
content-hashed checkpoint as an input model artifact (core/lineage.py), so it links to the training
run that logged the same manifest. The do-nothing assistant always runs too: its score is the
domain's floor. Re-running resumes; a label that now means another model is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from toolturn.core.checks import (
    BOOL,
    INT_RANGE,
    KIND,
    LOGGER_ADDABLE,
    PROBABILITY,
    SAMPLING,
    Check,
    check_table,
    integer,
    maybe,
    plain_config,
    require_set,
)
from toolturn.core.cli import precheck
from toolturn.core.endpoints import ENDPOINT_KEYS, Endpoints, parse_endpoint, required_keys
from toolturn.core.errors import ToolturnError
from toolturn.core.files import Appender, atomic_write, exclusive_lock
from toolturn.core.lineage import identity_manifest
from toolturn.core.roles.oracle_assistant import OracleAssistant
from toolturn.core.wandb_run import open_run
from toolturn.evaluate.assistants import DoNothing, ModelAssistant, TextOnly
from toolturn.evaluate.checkpoints import (
    RULE_ASSISTANTS,
    check_identities,
    describe,
    model_under_test,
    request_sampling,
    resolve_checkpoints,
)
from toolturn.evaluate.interrupts import Interrupted, StopSignals, summary
from toolturn.evaluate.report import PLOT, build_metrics, write_outputs
from toolturn.evaluate.runner import (
    DO_NOTHING,
    Checkpoint,
    latest_rows,
    run_checkpoint,
    sample_seed,
)
from toolturn.evaluate.suites import Sample, suite_class
from toolturn.evaluate.tasks import same_settings
from tqdm import tqdm

log = logging.getLogger("toolturn.evaluate")
# the config a run dir's samples were drawn with: resuming with other values is refused (a suite may
# name its own, e.g. without sql_tau's domain and user groups, which it never reads)
SAMPLE_SETTINGS = ("n", "seed", "sampling", "user", "eval", "domain")


# Every numeric and boolean knob of the evaluation config; `*` matches every key at its level.
CHECKS: dict[str, Check] = {
    "n": integer(1), "num_tasks": integer(1), "concurrency": integer(1), "seed": integer(0),
    "infra_retries": integer(0), "progress": BOOL,
    **{f"sampling.{k}": c for k, c in SAMPLING.items()},
    "user.kind": KIND, "user.reveal_per_turn": maybe(INT_RANGE), "user.withhold_ids": maybe(PROBABILITY),
    "user.max_stall_turns": maybe(integer(1)), "user.feedback": maybe(BOOL),
    **{f"user.sampling.{k}": maybe(c) for k, c in SAMPLING.items()},
}


# keys that `+key=value` may add: read with a default where the config files leave them out (an endpoint
# given as a mapping, e.g. eval.user_simulator.endpoint={server: none, ...})
ADDABLE_KEYS = ("eval.out_tag", *(f"{node}.{k}" for node in ("endpoint", "user.endpoint", "eval.user_simulator.endpoint")
                                  for k in ENDPOINT_KEYS), *LOGGER_ADDABLE)


def role_endpoints(cfg: DictConfig) -> dict[str, DictConfig]:
    """Besides the model under test (`endpoint`): the endpoint node of each LLM role this run has, by its key: the
    LLM user simulator's, and a suite's own (`ENDPOINTS`: keys that are null when the role has none)."""
    nodes = {"user.endpoint": cfg.user.endpoint} if cfg.user.kind == "llm" and "endpoint" in cfg.user else {}
    for key in getattr(suite_class(str(cfg.eval.name)), "ENDPOINTS", ()):
        if (node := OmegaConf.select(cfg, key)) is not None:
            nodes[key] = node
    return nodes


def endpoint_keys(cfg: DictConfig, names: list[str]) -> list[str]:
    """The endpoint keys this run reads that must be set (endpoint=external leaves base_url and model `???`):
    the URL when a model is served, the model name when the base weights are (checkpoint `base`, or a
    suite's own use of them: `uses_base(cfg)`), and the model (and URL) of each LLM role's endpoint."""
    keys = []
    if cfg.endpoint.server == "none":
        suite = suite_class(str(cfg.eval.name))
        base = "base" in names or getattr(suite, "uses_base", lambda _cfg: False)(cfg)
        if base or any(n not in RULE_ASSISTANTS for n in names):
            keys.append("endpoint.base_url")
        keys += ["endpoint.model"] if base else []
    for key, node in role_endpoints(cfg).items():
        parent, _, leaf = key.rpartition(".")
        keys += required_keys(parent, {leaf: node}, [leaf])
    return keys


def validate(cfg: DictConfig) -> None:
    if not OmegaConf.is_list(cfg.checkpoints):
        raise ToolturnError(f"checkpoints must be a list, got {cfg.checkpoints!r}; e.g. checkpoints=[{cfg.checkpoints}]")
    names = [str(c) for c in cfg.checkpoints]
    if not names:
        raise ToolturnError("checkpoints is empty; e.g. checkpoints=[base] or checkpoints=[base,runs/train/x/merged]")
    if len(set(names)) != len(names):
        raise ToolturnError(f"checkpoints lists an entry twice: {names}")
    model_under_test(cfg)  # every endpoint node, parsed by the one schema: a bad key is one line
    for key, node in role_endpoints(cfg).items():
        parse_endpoint(node, key)
    require_set(cfg, endpoint_keys(cfg, names))
    plain = plain_config(cfg)
    check_table(plain, CHECKS)
    check_table(plain, getattr(suite_class(str(cfg.eval.name)), "CHECKS", {}))  # the suite's own eval.* knobs


def _settings(cfg: DictConfig, keys: tuple[str, ...]) -> dict:
    return {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in keys}


def _assistant_factory(c: Checkpoint, suite, client=None, sampling=None):
    if c.kind == DO_NOTHING:
        return lambda item, seed: DoNothing()
    if c.kind == "oracle":
        write_tools = {t.name for t in suite.domain.tools if t.effect == "write"}
        return lambda item, seed: TextOnly(OracleAssistant(item.tasks, random.Random(seed), write_tools,
                                                           policy=suite.policy, identify=suite.identify))
    return lambda item, seed: ModelAssistant(client, sampling, seed)


async def _run_all(cfg: DictConfig, suite, checkpoints: list[Checkpoint], out_dir: Path, done: set, bar,
                   stops: StopSignals | None = None) -> None:
    if stops is not None:  # SIGINT / SIGTERM now cancel this task: every finally below runs (evaluate/interrupts.py)
        stops.attach(asyncio.get_running_loop(), asyncio.current_task())
    common = dict(seed=int(cfg.seed), concurrency=int(cfg.concurrency), infra_retries=int(cfg.infra_retries),
                  done=done, progress=lambda _row: bar.update())
    logs = out_dir / "logs"
    with contextlib.ExitStack() as stack:
        writer = Appender(out_dir / "samples.jsonl")
        stack.callback(writer.close)
        if hasattr(suite, "run_batch"):  # an official benchmark: it runs its own process, endpoints included
            for c in checkpoints:
                n = 1 if c.kind == DO_NOTHING else int(cfg.n)
                todo = [Sample(item, k, sample_seed(int(cfg.seed), item.id, k)) for item in suite.items
                        for k in range(n) if (c.name, item.id, k) not in done]
                if todo:
                    await suite.run_batch(c, todo, lambda row: (writer.write(row), bar.update()))
            return
        if cfg.user.kind == "llm":
            users = stack.enter_context(Endpoints({"user": parse_endpoint(cfg.user.endpoint, "user.endpoint")},
                                                  ["user"], logs))
            suite.user_client = users.client("user")
        try:
            for c in checkpoints:
                n = 1 if c.kind == DO_NOTHING else int(cfg.n)  # the do-nothing floor is deterministic
                if c.kind != "model":
                    await run_checkpoint(suite, c, _assistant_factory(c, suite), n=n, out=writer, **common)
                    continue
                with Endpoints({c.name: c.endpoint}, [c.name], logs) as endpoints:
                    try:
                        make = _assistant_factory(c, suite, endpoints.client(c.name),
                                                  request_sampling(cfg.sampling, c.endpoint))
                        await run_checkpoint(suite, c, make, n=n, out=writer, **common)
                    finally:
                        await endpoints.aclose()
        finally:
            if suite.user_client is not None:
                await suite.user_client.aclose()


def _summary(metrics: dict) -> dict:
    """The W&B summary: per checkpoint its identity, pass^k, pass@k, pass^k per task kind, the reward parts' and
    the behaviour rates."""
    out = {"floor/pass_hat_1": metrics["floor"]["pass_hat_1"]}
    if "tool_offer" in metrics:
        out["tool_offer"] = metrics["tool_offer"]["tools"]
    for name, m in metrics["checkpoints"].items():
        out[f"{name}/identity"] = describe(m["identity"])
        out.update({f"{name}/pass_hat_{k}": v for k, v in m["pass_hat_k"].items()})
        out.update({f"{name}/pass_at_{k}": v for k, v in m["pass_at_k"].items()})
        out.update({f"{name}/{kind}/pass_hat_{k}": v for kind, got in m["per_kind"].items()
                    for k, v in got["pass_hat_k"].items()})
        out.update({f"{name}/part/{p}": v for p, v in m["parts"].items()})
        for rate, r in m["behaviour"].items():
            out.update({f"{name}/behaviour/{rate}": r["value"], f"{name}/behaviour/{rate}_n": r["n"]})
        out[f"{name}/infra_error_samples"] = m["infra_error_samples"]
        out[f"{name}/evaluated_samples"] = m["evaluated"]
    return out


def _log_wandb(cfg: DictConfig, out_dir: Path, metrics: dict, rows: list[dict]) -> None:
    run = open_run(cfg.logger, out_dir, f"eval-{metrics['suite']}-{metrics['domain']}-s{cfg.seed}",
                   OmegaConf.to_container(cfg, resolve=True), job_type="eval")
    for name, m in metrics["checkpoints"].items():
        i = m["identity"]
        if i["sha256"]:  # the same manifest the training run logged as its output: W&B links the two runs
            run.artifact("model", identity_manifest(i), {"label": name, "model": i["model"], "path": i["path"]},
                         use=True)
    parts = metrics["parts"]
    columns = ["checkpoint", "task_id", "kind", "sample", "seed", "reward", *parts, "policy_violations",
               "termination", "infra_error", "user_turns", "tool_calls", "messages"]
    table = []
    for r in rows:
        got = r.get("parts") or {}
        broken = ", ".join(f"{v['rule']} @{v['message']}" for v in got.get("policy_violations") or [])
        table.append([r["checkpoint"], r["task_id"], r.get("kind"), r["sample"], r["seed"], r.get("reward"),
                      *(got.get(p) for p in parts), broken, r.get("termination"), r.get("infra_error"),
                      r.get("user_turns"), r.get("tool_calls"), json.dumps(r.get("messages") or [], ensure_ascii=False)])
    run.table("samples", columns, table)
    run.image("pass_hat_k", out_dir / PLOT)
    run.summary(_summary(metrics))
    run.finish()


def _run_samples(cfg: DictConfig, suite, checkpoints: list[Checkpoint], out_dir: Path, done: set, bar,
                 stops: StopSignals | None) -> None:
    """The event loop of the samples; a stop signal inside it ends as Interrupted after every finally ran."""
    try:
        asyncio.run(_run_all(cfg, suite, checkpoints, out_dir, done, bar, stops))
    except asyncio.CancelledError:
        if stops is None or stops.signum is None:
            raise
        raise Interrupted(stops.signum) from None
    finally:
        if stops is not None:
            stops.detach()


def evaluate(cfg: DictConfig, stops: StopSignals | None = None) -> dict:
    """`stops`: the command line's signal handling (evaluate/interrupts.py); None where nothing stops the run."""
    validate(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out_dir / ".lock", f"evaluation dir {out_dir}"):
        checkpoints = resolve_checkpoints(cfg)
        suite = suite_class(cfg.eval.name)(cfg, out_dir, checkpoints)
        try:
            settings = _settings(cfg, getattr(suite, "SAMPLE_SETTINGS", SAMPLE_SETTINGS))
            if not same_settings(out_dir / "run.json", settings, "samples"):
                atomic_write(out_dir / "run.json", json.dumps(settings, indent=1, sort_keys=True))
            check_identities(out_dir / "identities.json", checkpoints)
            atomic_write(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            rows = latest_rows(out_dir / "samples.jsonl")
            done = {k for k, r in rows.items() if r.get("infra_error") is None}
            total = sum(len(suite.items) * (1 if c.kind == DO_NOTHING else int(cfg.n)) for c in checkpoints)
            with tqdm(total=total, initial=len(done & _keys(suite, checkpoints, int(cfg.n))), unit="episode",
                      disable=not cfg.progress, desc="evaluate") as bar:
                _run_samples(cfg, suite, checkpoints, out_dir, done, bar, stops)
            wanted = _keys(suite, checkpoints, int(cfg.n))
            rows = [r for k, r in latest_rows(out_dir / "samples.jsonl").items() if k in wanted]
            header = {"suite": suite.name, "domain": suite.domain_name, "user": suite.user_name,
                      "sampling": OmegaConf.to_container(cfg.sampling, resolve=True), "num_tasks": len(suite.items),
                      "seed": int(cfg.seed), "tasks_are": getattr(suite, "tasks_are", "held-out"),
                      "checker": getattr(suite, "checker", "the suite's checker"),
                      "not_evaluated_rule": getattr(suite, "not_evaluated_rule", None),
                      **(suite.header() if hasattr(suite, "header") else {})}
            # before close: the behaviour rates replay episodes on the suite's database
            metrics = build_metrics(rows, {c.name: c.identity for c in checkpoints}, int(cfg.n), header, suite)
            if hasattr(suite, "native_outputs"):  # the benchmark's own result files, for its own tools
                metrics["native_outputs"] = suite.native_outputs(
                    {c.name: [r for r in rows if r["checkpoint"] == c.name] for c in checkpoints})
            write_outputs(out_dir, metrics, suite)
        finally:
            suite.close()
        _log_wandb(cfg, out_dir, metrics, rows)
    down = [c.name for c in checkpoints if metrics["checkpoints"][c.name]["scored_samples"] == 0]
    if down:
        raise ToolturnError(f"no sample of {down} could be scored (infrastructure errors, see samples.jsonl and "
                            f"{out_dir / 'logs'}); outputs are written and re-running retries them")
    return metrics


def _keys(suite, checkpoints: list[Checkpoint], n: int) -> set[tuple]:
    return {(c.name, item.id, k) for c in checkpoints for item in suite.items
            for k in range(1 if c.kind == DO_NOTHING else n)}


@hydra.main(version_base="1.3", config_path="pkg://toolturn.conf", config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    logging.getLogger("toolturn").setLevel(logging.WARNING)
    with StopSignals() as stops:
        try:
            evaluate(cfg, stops)
        except ToolturnError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as exc:
            print(summary(Path(cfg.out_dir), exc), file=sys.stderr)
            sys.exit(exc.exit_code)
    print(f"wrote {Path(cfg.out_dir) / 'report.md'}")


def main() -> None:
    try:
        precheck(sys.argv[1:], "evaluate", validate, ADDABLE_KEYS)
        _hydra_main()
    except KeyboardInterrupt:  # Ctrl-C before the evaluation's own handling is in place (composing the config)
        print("interrupted (SIGINT) before the evaluation started: nothing was run", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
