"""Slurm for real: a single-node cluster on localhost (tests/slurm_cluster.py: Debian's slurm-wlm and munge, installed
when missing) runs a Hydra multirun of two generations through the submitit launcher, and a toolturn-run experiment
as a graph of dependent jobs, one per stage, in which the training job, signalled as Slurm signals a job whose time
is up, is requeued and resumes from its checkpoint. Skips with the reason where Slurm cannot be installed or run."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from mock_openai import MockServer, completion
from slurm_cluster import LocalSlurm, Unavailable, wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures" / "conf"
LAUNCHERS = sorted(p.stem for p in (ROOT / "conf" / "hydra" / "launcher").glob("*.yaml"))
DEADLINE_S = 900  # generous: the CI box is a loaded 2-core machine; every wait polls observable state


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_launcher_config_composes_for_every_app(launcher):
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        for app in ("generate", "train", "evaluate"):
            cfg = compose(app, overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
            assert "submitit" in cfg.hydra.launcher._target_
            assert cfg.hydra.callbacks.snapshot._target_ == "toolturn.core.snapshot.Snapshot"
        if launcher.startswith("slurm"):
            run = compose("run", overrides=["slurm.cpu.partition=cpu", "launcher=slurm"])
            assert run.slurm.cpu.partition == "cpu" and run.slurm.gpu.gpus_per_node == 8


def test_the_launchers_are_the_documented_ones():
    assert LAUNCHERS == ["local", "slurm_cpu", "slurm_gpu"]
    readme = (ROOT / "slurm" / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in LAUNCHERS)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except Unavailable as exc:
        c.stop()
        pytest.skip(f"no local Slurm cluster: {exc}")
    yield c
    c.stop()


@pytest.mark.slow
def test_a_hydra_multirun_of_two_generations_runs_as_two_slurm_jobs(cluster, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    proc = subprocess.run(
        [str(BIN / "toolturn-generate"), "-m", "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", f"hydra.sweep.dir={tmp_path / 'sweep'}", "roles=rule", "domain=retail",
         "pipeline=user_oriented", "num_dialogues=3", "concurrency=2", "logger=none", "progress=false",
         f"out_dir={runs[0]},{runs[1]}"],
        capture_output=True, text=True, env=cluster.env, timeout=DEADLINE_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if re.fullmatch(r"\d+_\d", p.name))
    assert len(jobs) == 2  # one array job of two tasks
    for job in jobs:  # the launcher returns on the jobs' results; Slurm then ends the jobs
        wait_for(f"job {job} to end", lambda: cluster.job(job)["JobState"] not in ("RUNNING", "COMPLETING"), 120)
        assert cluster.job(job)["JobState"] == "COMPLETED"
    for run in runs:
        audit = subprocess.run([str(BIN / "toolturn-audit"), str(run)], capture_output=True, text=True,
                               timeout=300)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert json.loads((run / "stats.json").read_text())["dialogues"] == 3
    snapshot = tmp_path / "sweep" / ".code"
    assert (snapshot / "toolturn" / "generate" / "run.py").exists() and (snapshot / "SNAPSHOT.json").exists()
    assert f"sweep code snapshot: {snapshot}" in proc.stdout
    for job in jobs:  # each job imported the snapshot
        log = (tmp_path / "sweep" / ".submitit" / job / f"{job}_0_log.out").read_text()
        assert f"toolturn code: {snapshot / 'toolturn'}" in log


def _stage_jobs(out: Path) -> dict[str, dict]:
    return {j["stage"]: j for j in json.loads((out / ".slurm" / "jobs.json").read_text())["jobs"]}


def _time(field: str) -> float:
    return time.mktime(time.strptime(field, "%Y-%m-%dT%H:%M:%S"))


class GatedEndpoint:
    """The model under evaluation: answers until the evaluation has scored a sample of `checkpoint`, then holds every
    request until `release()`, so that the evaluation is stopped with work done and work left, whatever the
    machine's speed."""

    def __init__(self, samples: Path):
        self.samples, self.held, self.released = samples, 0, threading.Event()

    def scored(self) -> list[dict]:
        if not self.samples.exists():
            return []
        rows = [json.loads(line) for line in self.samples.read_text().splitlines() if line.strip()]
        return [r for r in rows if r["checkpoint"].endswith("merged") and r.get("reward") is not None]

    async def __call__(self, request: dict):
        if self.scored() and not self.released.is_set():
            self.held += 1
            while not self.released.is_set():
                await asyncio.sleep(0.05)
        return completion("I can look into that for you.")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a training and an evaluation twice, as Slurm jobs, on a loaded 2-core box
def test_an_experiment_is_a_job_graph_and_a_signalled_job_is_requeued_and_resumes(cluster, tmp_path):
    out = tmp_path / "tiny"
    small = "{cpus:1,mem_gb:1,time_min:30}"
    tuned = out / "evaluate" / "retail" / "tuned"
    endpoint = GatedEndpoint(tuned / "samples.jsonl")
    with MockServer(endpoint) as server:
        env = {**cluster.env, "TOOLTURN_TEST_URL": server.base_url, "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "toolturn.experiment.run", "experiment=tiny",
             f"hydra.searchpath=[file://{FIXTURES}]", f"out_dir={out}", "launcher=slurm", "logger=none",
             "heartbeat_s=600", "~experiment.datasets.to", "experiment.common.train.max_steps=2",
             f"+experiment.resources={{generate:{small},train:{small},evaluate:{small}}}"],
            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        jobs = _stage_jobs(out)
        assert list(jobs) == ["generate:uo", "audit:uo", "train:tuned", "evaluate:retail:oracle",
                              "evaluate:retail:tuned", "report"]
        assert f"squeue -j {','.join(j['job_id'] for j in jobs.values())}" in proc.stdout
        # while they are queued (the report's job waits for the held evaluation), a second submission is refused
        twice = subprocess.run(proc.args, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert twice.returncode == 2 and "of an earlier submission for" in twice.stderr, twice.stdout + twice.stderr

        # the evaluation job, with a sample scored and the next held, gets what Slurm sends before a time limit
        evaluation = jobs["evaluate:retail:tuned"]["job_id"]
        wait_for("a held request of the tuned evaluation", lambda: endpoint.held, DEADLINE_S)
        before = endpoint.scored()
        cluster.run("scancel", "--signal=USR2", evaluation, check=True)
        wait_for("the evaluation job to be requeued", lambda: cluster.job(evaluation)["Restarts"] == "1", 120)
        endpoint.released.set()
        report_job = jobs["report"]["job_id"]
        wait_for("the report job to end", lambda: cluster.job(report_job)["JobState"] not in ("PENDING", "RUNNING"),
                 DEADLINE_S, every_s=1)
        # submitted again (the same command, the same endpoint): every stage is cached, nothing is submitted
        again = subprocess.run(proc.args, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert again.returncode == 0 and "nothing to submit: every stage is done" in again.stdout, again.stderr

    state = {name: cluster.job(j["job_id"]) for name, j in jobs.items()}
    assert {name: s["JobState"] for name, s in state.items()} == dict.fromkeys(jobs, "COMPLETED")
    # every stage ran as its own job after the jobs it depends on
    for name, j in jobs.items():
        for upstream in j["after"]:
            (need,) = [n for n, u in jobs.items() if u["job_id"] == upstream]
            assert _time(state[name]["StartTime"]) >= _time(state[need]["EndTime"]), (name, need)
    assert jobs["report"]["after"] and jobs["generate:uo"]["after"] == []

    # requeued once and resumed: what was scored before is kept, the rest scored once, nothing twice
    assert state["evaluate:retail:tuned"]["Restarts"] == "1"
    key = lambda r: (r["task_id"], r["sample"])  # noqa: E731
    after = endpoint.scored()
    assert before and all(r in after for r in before)
    assert len(after) == len({key(r) for r in after}) == 8
    job_log = (out / ".slurm" / "jobs" / evaluation / f"{evaluation}_0_log.out").read_text()
    assert "evaluate:retail:tuned: stopped by SIGUSR2" in job_log
    assert "evaluate:retail:tuned: running (resuming an unfinished run)" in job_log
    assert job_log.count("evaluate:retail:tuned: done") == 1
    assert f"code {out / '.slurm'}" in job_log  # the job imported the snapshot taken at submission

    summary = json.loads((out / "report" / "summary.json").read_text())
    arms = summary["evaluations"]["retail"]
    assert arms["oracle"]["pass_hat_1"] == 1.0 and arms["tuned"]["floor"] == 0.0
    assert arms["tuned"]["scored"] == arms["tuned"]["samples"] == 8


@pytest.mark.slow
def test_a_job_sbatch_refuses_is_one_line_and_leaves_no_half_graph(cluster, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "toolturn.experiment.run", "experiment=tiny", f"hydra.searchpath=[file://{FIXTURES}]",
         f"out_dir={tmp_path / 'x'}", "launcher=slurm", "logger=none", "~experiment.datasets.to",
         "+experiment.resources={generate:{cpus:1,mem_gb:1},train:{cpus:1,mem_gb:1},evaluate:{gpus:1}}",
         "slurm.gpu.partition=nope"],
        capture_output=True, text=True, env=cluster.env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: sbatch refused the job of stage evaluate:retail:oracle: ")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    cancelled = re.search(r"cancelled jobs ([\d,]+) of this submission", proc.stderr).group(1).split(",")
    assert len(cancelled) == 3  # generate, audit, train
    wait_for("the cancelled jobs to leave the queue", lambda: not set(cancelled) & set(cluster.jobs()), 120)


@pytest.mark.slow
def test_every_daemon_it_started_is_stopped(cluster):
    pids = [cluster.pid(d) for d in ("munged", "slurmctld", "slurmd")]
    assert all(pids)
    cluster.stop()
    for pid in pids:
        wait_for(f"pid {pid} to exit", lambda: not Path(f"/proc/{pid}").exists()
                 or Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z", 60)
