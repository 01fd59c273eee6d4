"""`toolturn-run`: an experiment end to end (a Hydra app).

    toolturn-run experiment=demo                       # generate -> audit -> train -> evaluate -> report
    toolturn-run experiment=ablation_cpu dry_run=true  # the plan: stages, commands, devices; runs nothing
    toolturn-run experiment=demo stage=evaluate        # one kind of stage alone (its inputs must exist)

Each stage is the stage's own command line (`experiment/plan.py`), run as a child process into its own
subdirectory of `out_dir`, its output in `out_dir/logs/<stage>.log`. Unchanged stages are skipped
(`experiment/cache.py`); re-running the same command after a kill resumes. Every stage config is composed
and checked before the first stage starts, so a typo in the last evaluation fails in a second, not after
hours of training.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import hydra
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from toolturn.core.checks import BOOL, LOGGER_ADDABLE, Check, check_table, plain_config
from toolturn.core.cli import one_line, precheck
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write, exclusive_lock
from toolturn.core.servers import child_setup
from toolturn.experiment import report, slurm
from toolturn.experiment.cache import StageCache
from toolturn.experiment.plan import ENTRY_POINTS, STAGE_KINDS, Stage, build
from toolturn.experiment.spec import Experiment, parse

CONFIG_NAME = {"toolturn-generate": "generate", "toolturn-train": "train", "toolturn-eval": "evaluate"}
CHECKS = {"dry_run": BOOL, "stage": Check(f"all or one of {', '.join(STAGE_KINDS)}",
                                          lambda v: v == "all" or v in STAGE_KINDS),
          "heartbeat_s": Check("a positive number of seconds", lambda v: isinstance(v, (int, float)) and v > 0),
          "launcher": Check("local or slurm", lambda v: v in ("local", "slurm")),
          "rerun": Check("a list of stage names or kinds", lambda v: isinstance(v, list)
                         and all(isinstance(x, str) for x in v))}
# `+key=value` may add anything under experiment (spec.parse and each stage's own check read it) and logger keys
ADDABLE_KEYS = ("experiment.**", *LOGGER_ADDABLE)
TERM_GRACE_S = 30  # a stage gets this long to stop cleanly (servers, checkpoints) before SIGKILL


def plan(cfg: DictConfig) -> tuple[Experiment, list[Stage]]:
    """The experiment and its stages, every stage's config composed and checked (one-line errors)."""
    check_table(plain_config(cfg), CHECKS)
    exp = parse(OmegaConf.to_container(cfg.experiment, resolve=True))
    stages = build(exp, Path(cfg.out_dir), OmegaConf.to_container(cfg.logger, resolve=True))
    check_stage_configs(stages)
    _check_rerun(list(cfg.rerun), stages)
    return exp, stages


def _check_rerun(rerun: list[str], stages: list[Stage]) -> None:
    known = [s.name for s in stages] + [k for k in STAGE_KINDS if any(s.group == k for s in stages)]
    for name in rerun:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; this experiment has: {', '.join(known)}"
            raise ToolturnError(f"rerun: no stage or kind of stage named {name!r}{hint}")


def forced(stage: Stage, rerun) -> bool:
    return stage.name in rerun or stage.group in rerun


@contextlib.contextmanager
def _compose_api():
    """Hydra's compose API from inside this Hydra app (whose own instance is set aside meanwhile)."""
    instance = GlobalHydra.instance()
    outer = instance.hydra
    instance.clear()
    try:
        with initialize_config_module("toolturn.conf", version_base="1.3"):
            yield
    finally:
        instance.clear()
        instance.hydra = outer


def check_stage_configs(stages: list[Stage]) -> None:
    """Compose every stage's config from its overrides and run the check its own command runs first."""
    for stage in stages:
        name = CONFIG_NAME.get(stage.script)
        if name is None:
            continue
        args = [a for a in stage.args if not a.startswith(("progress=", "out_dir="))]
        try:
            with _compose_api():
                cfg = compose(name, overrides=args)
            importlib.import_module(ENTRY_POINTS[stage.script]).validate(cfg)
        except HydraException as exc:
            raise ToolturnError(f"stage {stage.name}: {one_line(exc, args, name)}") from None
        except ToolturnError as exc:
            raise ToolturnError(f"stage {stage.name}: {exc}") from None


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def print_plan(exp: Experiment, stages: list[Stage], out: Path, rerun: list[str]) -> None:
    print(f"experiment {exp.name}: {exp.title}")
    print(f"out_dir: {out}")
    print(f"datasets: {', '.join(exp.datasets) or '-'}; models: " + ", ".join(
        f"{m.name} ({'trained on ' + '+'.join(m.data) if m.trained else 'untrained'})" for m in exp.models.values()))
    print(f"evaluations: " + ", ".join(f"{e.name} ({e.overrides.get('eval', 'sql_tau')} on "
                                       f"{', '.join(e.models)})" for e in exp.evaluations.values()))
    cache, by_name, runs = StageCache(out), {s.name: s for s in stages}, set()
    for i, s in enumerate(stages, 1):
        after = f"  after {', '.join(s.needs)}" if s.needs and s.kind != "report" else ""
        status = _cache_status(s, cache, by_name, runs, forced(s, rerun))
        if status.startswith("would run"):
            runs.add(s.name)
        print(f"[{i}/{len(stages)}] {s.name}  [{s.resources.line()}]{after}\n    {status}\n    {s.command()}")


def _cache_status(stage: Stage, cache: StageCache, by_name: dict[str, Stage], runs: set[str], force: bool) -> str:
    """What a real run would do with `stage` now (skip it as cached, or run it) and why; `runs` holds the
    stages before it that would run, whose new outputs its own fingerprint is made of."""
    if force:
        return "would run (rerun= asks for it: starting afresh)"
    upstream = [name for name in stage.needs if name in runs]
    if upstream:
        names = ", ".join(upstream) if len(upstream) <= 2 else f"{upstream[0]} and {len(upstream) - 1} more stages"
        return f"would run (after {names}, unless they make the same output again)"
    try:
        decision = cache.decide(stage, cache.fingerprint(stage, by_name))
    except ToolturnError:  # an upstream stage has never finished
        return "would run (after the stages it needs)"
    return f"would run ({decision.why})" if decision.run else f"cached, would skip: {decision.why}"


class Heartbeat:
    """While a stage runs: a line every `every_s` with the elapsed time and the stage's latest log line."""

    def __init__(self, label: str, log: Path, every_s: float):
        self.label, self.log, self.every_s = label, log, every_s
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            print(f"    {self.label}: {_fmt_s(time.monotonic() - self.t0)} elapsed; {_last_line(self.log)}", flush=True)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    last = next((ln for ln in reversed(lines) if ln), "")
    return last[:160]


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated()


def run_stage(stage: Stage, log: Path, heartbeat_s: float) -> None:
    """The stage's command as a child process in its own process group, which dies with us."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true"}
    with log.open("ab") as out, Heartbeat(stage.name, log, heartbeat_s):
        out.write(f"\n$ {stage.command()}\n".encode())
        out.flush()
        proc = subprocess.Popen(stage.argv(sys.executable), stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=_stage_child_setup(os.getpid()))
        try:
            code = proc.wait()
        except (KeyboardInterrupt, _Terminated):
            _stop_group(proc)
            raise
    if code != 0:
        raise ToolturnError(f"stage {stage.name} failed (exit {code}): {_error_line(log)}; log: {log}")


def _stage_child_setup(parent_pid: int):
    """The stage dies with us, and ignores SIGUSR2, which Slurm sends every process of a job before its time limit
    (experiment/slurm.py): we stop the stage then, with SIGTERM and its grace, so that it ends cleanly."""
    die_with_parent = child_setup(parent_pid)

    def setup() -> None:
        die_with_parent()
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    return setup


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _error_line(log: Path) -> str:
    """The stage's own one-line error if it printed one, else its last line."""
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-200:]
    errors = [ln for ln in text if ln.startswith("error:")]
    return (errors[-1] if errors else next((ln for ln in reversed(text) if ln.strip()), "no output"))[:300]


def execute(cfg: DictConfig, exp: Experiment, stages: list[Stage], out: Path) -> Path:
    by_name = {s.name: s for s in stages}
    cache = StageCache(out)
    chosen = [s for s in stages if cfg.stage == "all" or s.group == cfg.stage]
    t_all = time.monotonic()
    for i, stage in enumerate(chosen, 1):
        tag = f"[{i}/{len(chosen)}] {stage.name}"
        fingerprint = cache.fingerprint(stage, by_name)
        decision = cache.decide(stage, fingerprint, forced(stage, cfg.rerun))
        if not decision.run:
            print(f"{tag}: skipped, {decision.why}", flush=True)
            continue
        print(f"{tag}: running ({decision.why}) [{stage.resources.line()}]", flush=True)
        cache.start(stage, fingerprint, decision.fresh)
        t0 = time.monotonic()
        if stage.kind == "report":
            report.write(exp, stages, out, cfg.logger, _reproduce_command())
        else:
            run_stage(stage, out / "logs" / f"{stage.name.replace(':', '--')}.log", float(cfg.heartbeat_s))
        elapsed = time.monotonic() - t0
        cache.finish(stage, fingerprint, elapsed)
        print(f"{tag}: done in {_fmt_s(elapsed)}", flush=True)
    print(f"all stages done in {_fmt_s(time.monotonic() - t_all)}", flush=True)
    return out / "report" / "report.md"


def _reproduce_command() -> str:
    return shlex.join(["toolturn-run", *sys.argv[1:]])


def run(cfg: DictConfig) -> Path | None:
    exp, stages = plan(cfg)
    out = Path(cfg.out_dir).resolve()
    if cfg.dry_run:
        print_plan(exp, stages, out, list(cfg.rerun))
        return None
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / ".lock", f"experiment dir {out}"):
        atomic_write(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write(out / "plan.txt", "\n".join(f"{s.name}\t{s.command()}" for s in stages) + "\n")
        if cfg.launcher == "slurm":
            slurm.submit(cfg, exp, stages, out)
            return None
        print(f"experiment {exp.name}: {len(stages)} stages -> {out} (logs in {out / 'logs'})", flush=True)
        path = execute(cfg, exp, stages, out)
    if path.exists():
        print(report.terminal_table(path.parent / "summary.json"))
        print(f"report: {path}")
    return path


@hydra.main(version_base="1.3", config_path="pkg://toolturn.conf", config_name="run")
def _hydra_main(cfg: DictConfig) -> None:
    logging.getLogger("toolturn").setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        run(cfg)
    except ToolturnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, _Terminated):
        print("interrupted: the running stage was stopped; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    precheck(sys.argv[1:], "run", plan, ADDABLE_KEYS)  # before Hydra makes any dir
    _hydra_main()


if __name__ == "__main__":
    main()
