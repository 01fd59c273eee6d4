"""`toolturn-run ... launcher=slurm`: the experiment's stages as Slurm jobs, submitted through submitit.

Every stage that would run is one job, submitted with `--dependency=afterok:<the jobs of the stages it reads>`, so
an experiment is a job graph and a sweep of experiments a set of them; Slurm orders and places them, nothing of
ours waits. A stage whose upstream is not re-run and whose fingerprint matches its record is not submitted at all.
Inside its job a stage runs as `toolturn-run` runs it locally (`StageJob`): fingerprint, decide, the stage's own
command line (training under its launch prefix, evaluation with its model server), record. The cluster settings
are the `hydra/launcher` configs' fields (`slurm.cpu`, `slurm.gpu` in conf/run.yaml); a stage's resources set its
size (CPUs, memory, GPUs; its time estimate when above the launcher's `timeout_min`).

Requeue: before the time limit (`signal_delay_s`) Slurm sends USR2; submitit then calls `StageJob.checkpoint` and
requeues the job (up to `max_num_timeout` times; a preempted job always), and the job, started again, resumes the
stage: the stage stops first (SIGTERM, then its grace), and every stage resumes on its own (generation skips
finished ids, training continues from its last checkpoint, evaluation skips finished samples).

Snapshot: the jobs import the code copied at submission into OUT/.slurm/code-<time>/ (core/snapshot.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write_json, exclusive_lock
from toolturn.core.snapshot import package_dir, python_path, take
from toolturn.experiment import report
from toolturn.experiment.cache import StageCache
from toolturn.experiment.plan import Stage
from toolturn.experiment.spec import Experiment

DIR = ".slurm"
# the plugin's BaseQueueConf fields keep their names in submitit's AutoExecutor; the others get a slurm_ prefix
BASE_FIELDS = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
               "stderr_to_stdout"}
SET_HERE = {"_target_", "submitit_folder", "name", "array_parallelism", "max_num_timeout"}


@dataclass(frozen=True)
class StageJob:
    """What one Slurm job runs (pickled by submitit): one stage, as toolturn-run runs it locally."""

    stage: Stage
    stages: tuple[Stage, ...]
    exp: Experiment
    out: Path
    logger: dict[str, Any]
    command: str  # what reproduces the experiment (named in the report)
    heartbeat_s: float
    force: bool = False  # rerun= names it: start afresh even if cached (once: a requeued job resumes)

    def __call__(self) -> str:
        from toolturn.experiment import run as local

        caught: list[int] = []

        def stop(signum, frame):
            # Slurm's USR2 before the time limit or on preemption, TERM on scancel: run_stage stops the stage
            # (SIGTERM, its grace, SIGKILL) and re-raises
            caught.append(signum)
            raise local._Terminated()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGUSR2, signal.SIGTERM)}
        try:
            return self._run(local)
        except local._Terminated:
            if not caught:
                raise
            print(f"{self.stage.name}: stopped by {signal.Signals(caught[0]).name}", flush=True)
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)  # submitit's: checkpoint() and requeue (USR2), or log (TERM)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self, local) -> str:
        stage, cache = self.stage, StageCache(self.out)
        print(f"{stage.name}: Slurm job {os.environ.get('SLURM_JOB_ID', '?')} on {socket.gethostname()}, code "
              f"{package_dir('toolturn')}", flush=True)
        name = stage.name.replace(":", "--")
        (self.out / DIR / "locks").mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.out / DIR / "locks" / f"{name}.lock", f"stage {stage.name}"):
            fingerprint = cache.fingerprint(stage, {s.name: s for s in self.stages})
            decision = cache.decide(stage, fingerprint, self.force)
            if not decision.run:
                print(f"{stage.name}: skipped, {decision.why}", flush=True)
                return "skipped"
            print(f"{stage.name}: running ({decision.why}) [{stage.resources.line()}]", flush=True)
            cache.start(stage, fingerprint, decision.fresh)
            object.__setattr__(self, "started", True)
            t0 = time.monotonic()
            if stage.kind == "report":
                report.write(self.exp, list(self.stages), self.out, self.logger, self.command)
            else:
                local.run_stage(stage, self.out / "logs" / f"{name}.log", self.heartbeat_s)
            cache.finish(stage, fingerprint, time.monotonic() - t0)
        print(f"{stage.name}: done", flush=True)
        return "done"

    def checkpoint(self):
        """Called by submitit before it requeues the job: run the same stage again (it resumes)."""
        import submitit

        started = getattr(self, "started", False)  # rerun= has emptied the stage's dir: now resume it
        return submitit.helpers.DelayedSubmission(replace(self, force=self.force and not started))


@dataclass(frozen=True)
class Submitted:
    stage: str
    job_id: str
    after: tuple[str, ...]  # job ids


def to_submit(stages: list[Stage], chosen: list[Stage], out: Path,
              rerun: list[str]) -> tuple[list[Stage], dict[str, str]]:
    """The chosen stages that would run (a stage is left out only when nothing it reads is submitted and its cache
    says skip), and why each other one is not; a stage that needs one that never ran is a one-line error."""
    from toolturn.experiment.run import forced

    cache, by_name = StageCache(out), {s.name: s for s in stages}
    submit, skipped, names = [], {}, set()
    for stage in chosen:
        if not any(n in names for n in stage.needs):
            decision = cache.decide(stage, cache.fingerprint(stage, by_name), forced(stage, rerun))
            if not decision.run:
                skipped[stage.name] = decision.why
                continue
        submit.append(stage)
        names.add(stage.name)
    return submit, skipped


def _still_queued(out: Path) -> list[str]:
    """Jobs of the last submission for this experiment dir that Slurm still has pending or running."""
    path = out / DIR / "jobs.json"
    if not path.exists():
        return []
    ids = [j["job_id"] for j in json.loads(path.read_text())["jobs"]]
    if not ids:
        return []
    proc = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True,
                          timeout=60)
    return [i for i in proc.stdout.split() if i in ids]  # unknown ids (long finished) make squeue fail: none


def _parameters(knobs: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """submitit AutoExecutor parameters: the launcher config's fields with the stage's size on top."""
    r = stage.resources
    params = {k: v for k, v in knobs.items() if k not in SET_HERE and v is not None}
    params.update(cpus_per_task=r.cpus, mem_gb=r.mem_gb, timeout_min=max(int(knobs["timeout_min"]), r.time_min))
    if r.gpus and not knobs.get("gres"):
        params["gpus_per_node"] = r.gpus
    return {k if k in BASE_FIELDS else f"slurm_{k}": v for k, v in params.items()}


def submit(cfg: DictConfig, exp: Experiment, stages: list[Stage], out: Path) -> list[Submitted]:
    """Submit the stages that would run as a job graph; print the job ids and how to follow them."""
    import submitit
    from toolturn.experiment.run import _reproduce_command, forced

    if not shutil.which("sbatch"):
        raise ToolturnError("launcher=slurm needs Slurm's sbatch on PATH (run it on a cluster's login node)")
    queued = _still_queued(out)
    if queued:
        raise ToolturnError(f"jobs {','.join(queued)} of an earlier submission for {out} are still queued or "
                            f"running; wait for them or cancel them (scancel {' '.join(queued)}) first")
    chosen = [s for s in stages if cfg.stage == "all" or s.group == cfg.stage]
    todo, skipped = to_submit(stages, chosen, out, list(cfg.rerun))
    for name, why in skipped.items():
        print(f"{name}: not submitted, {why}", flush=True)
    if not todo:
        print("nothing to submit: every stage is done", flush=True)
        return []

    stamp = time.strftime("%Y%m%d-%H%M%S")
    code = take(out / DIR / f"code-{stamp}") if cfg.slurm.snapshot else None
    knobs = {kind: OmegaConf.to_container(cfg.slurm[kind], resolve=True) for kind in ("cpu", "gpu")}
    logger = OmegaConf.to_container(cfg.logger, resolve=True)

    job_of: dict[str, str] = {}
    done: list[Submitted] = []
    for stage in todo:
        kind = "gpu" if stage.resources.gpus else "cpu"
        executor = submitit.AutoExecutor(folder=out / DIR / "jobs" / "%j", cluster="slurm",
                                         slurm_max_num_timeout=int(knobs[kind]["max_num_timeout"]))
        params = _parameters(knobs[kind], stage)
        after = tuple(job_of[n] for n in stage.needs if n in job_of)
        setup = list(params.pop("slurm_setup", None) or [])
        if code is not None:
            setup.append(f"export PYTHONPATH={python_path(code)}")
        executor.update_parameters(name=f"{exp.name}:{stage.name}", slurm_setup=setup, **params,
                                   **({"slurm_dependency": "afterok:" + ":".join(after)} if after else {}))
        job = _submit_one(executor, StageJob(stage, tuple(stages), exp, out, logger, _reproduce_command(),
                                             float(cfg.heartbeat_s), forced(stage, cfg.rerun)), list(job_of.values()))
        job_of[stage.name] = job.job_id
        done.append(Submitted(stage.name, job.job_id, after))

    record = {"submitted": stamp, "code": str(code) if code else None,
              "jobs": [{"stage": s.stage, "job_id": s.job_id, "after": list(s.after)} for s in done]}
    atomic_write_json(out / DIR / "jobs.json", record)
    with (out / DIR / "submissions.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    _print_graph(done, out, code)
    return done


def _submit_one(executor, job: StageJob, before: list[str]):
    """Submit one stage's job; when sbatch refuses it (a bad partition, account, size...), cancel the jobs of this
    submission made before it, so that no half graph is left queued, and say why in one line."""
    from submitit.core.utils import FailedJobError

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's stderr too; it is in the error
            return executor.submit(job)
    except (FailedJobError, OSError) as exc:
        if before:
            subprocess.run(["scancel", *before], capture_output=True, timeout=60)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        cancelled = f"; cancelled jobs {','.join(before)} of this submission" if before else ""
        raise ToolturnError(f"sbatch refused the job of stage {job.stage.name}: "
                            f"{lines[-1] if lines else type(exc).__name__}{cancelled}") from None


def _print_graph(done: list[Submitted], out: Path, code: Path | None) -> None:
    width = max(len(s.stage) for s in done)
    print(f"submitted {len(done)} Slurm jobs" + (f" (code snapshot: {code})" if code else ""))
    for s in done:
        print(f"  {s.stage:<{width}}  job {s.job_id}" + (f"  after {','.join(s.after)}" if s.after else ""))
    ids = [s.job_id for s in done]
    print(f"watch:   squeue -j {','.join(ids)}   (a stage's job: scontrol show job ID)\n"
          f"logs:    {out / 'logs'}/<stage>.log (the stage), {out / DIR / 'jobs'}/<job id>/ (the job)\n"
          f"plan:    the same toolturn-run command with dry_run=true shows what is cached\n"
          f"cancel:  scancel {' '.join(ids)}", flush=True)
    if done[-1].stage == "report":
        print(f"report:  {out / 'report' / 'report.md'} once job {done[-1].job_id} has finished", flush=True)

