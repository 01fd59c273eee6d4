"""A run's LLM endpoints: one schema for every endpoint node, managed servers started once per run, one async
client per endpoint.

Every endpoint any stage or role reads is one node of the same schema (`EndpointConfig`, parsed by
`parse_endpoint`; docs/endpoints.md has the table): generation's named endpoints `llm.endpoints.<name>`,
evaluation's model under test `endpoint`, its LLM user simulator `user.endpoint`, and τ²'s
`eval.user_simulator.endpoint`. The presets are one config group, conf/endpoint/.
Only the endpoints a run names are started; servers are stopped on exit, error or signal. An external
endpoint's base_url may be a list: replicas of one model (`core/replicas.py`). With a `cache_dir` (generation
passes one; evaluation does not, so that its samples stay independent) each endpoint whose `cache` is on
answers repeated requests from a response cache (`core/llm_cache.py`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from toolturn.core.checks import BOOL, POSITIVE, Check, integer, is_number
from toolturn.core.errors import ToolturnError
from toolturn.core.llm import Endpoint, LLMClient, Sampling
from toolturn.core.llm_cache import ResponseCache
from toolturn.core.servers import ManagedServer, ServerSpec, embedded_smollm2_dir, place_replicas, visible_gpus


def sampling(spec) -> Sampling:
    return Sampling(temperature=float(spec.get("temperature", 0.7)), top_p=float(spec.get("top_p", 1.0)),
                    max_tokens=int(spec.get("max_tokens", 512)))


def resolve_model(model: str) -> str:
    """A model name as a server takes it: `embedded:smollm2` is the converted SmolLM2 dir (built once)."""
    if model == "embedded:smollm2":
        return str(embedded_smollm2_dir())
    return model


@dataclass(frozen=True)
class ServerKind:
    managed: bool  # the harness starts it: `model` is what it serves, `extra_args` go on its command line
    lora: bool = False  # it serves a LoRA adapter (`lora`) on its model


# What `server:` may be. A new managed server kind is one line here (and its command in core/servers.py).
SERVERS = {
    "transformers": ServerKind(managed=True),  # `transformers serve` on CPU
    "batched": ServerKind(managed=True),  # core/serve_batched.py on CPU: continuous batching, a prefix cache
    "vllm": ServerKind(managed=True, lora=True),  # `vllm serve` on GPU
    "none": ServerKind(managed=False),  # not started by the harness: base_url (a list: replicas), api_key_env
}


@dataclass(frozen=True)
class EndpointConfig:
    """One endpoint node. Defaults are conf/endpoint/_defaults.yaml's (tests/test_endpoint_config.py checks)."""
    server: str
    model: str | None = None  # the served model dir or Hub id, `embedded:smollm2`, or an external model name
    base_url: tuple[str, ...] = ()  # server none: one URL, or the replicas serving one model
    api_key_env: str | None = None  # server none: the environment variable holding the API key
    lora: str | None = None  # a LoRA adapter dir served on `model` (a server kind with lora)
    extra_args: tuple[str, ...] = ()  # a managed server's extra command-line arguments
    replicas: int = 1  # a managed server: copies started, each on its own GPUs (vllm) or cores (CPU servers)
    max_concurrency: int = 64  # in flight, all replicas together; the ceiling of the adaptive limit
    replica_max_concurrency: int | None = None  # in flight per replica (None: max_concurrency)
    adaptive: bool = True  # lower the limit on 429s and timeouts, grow it back while the endpoint keeps up
    min_concurrency: int = 1  # the adaptive limit's floor
    latency_tolerance: float | None = None  # also lower it when latency per token passes this x the best seen
    probe_s: float = 1.0  # first wait before probing a replica that failed (doubles up to 30 s)
    timeout_s: float = 300.0  # per attempt
    max_retries: int = 4  # 408/429/5xx, timeouts and broken replies
    backoff_s: float = 0.5  # first wait without a Retry-After (doubles per attempt, full jitter)
    max_wait_s: float = 60.0  # cap on any wait between attempts
    max_reply_bytes: int = 1 << 20  # a larger response body fails the request (reply_too_large)
    max_content_chars: int = 1 << 17  # likewise for the content or one tool call's arguments
    cache: bool = True  # generation only: answer a request already answered from the response cache
    cache_dir: str | None = None  # None: <out_dir>/llm_cache
    cache_max_mib: float = 4096.0  # least recently used answers are evicted above this size

    @property
    def kind(self) -> ServerKind:
        return SERVERS[self.server]

    def check_one_url(self, what: str, user: str) -> None:
        """For a `user` that sends every request to one URL (BFCL's and tau2's own clients): an endpoint with
        replicas is a one-line error before anything starts, not a silent fall-back to its first replica."""
        n = max(self.replicas, len(self.base_url))
        if n > 1:
            raise ToolturnError(f"{what} has {n} replicas, but {user} sends every request to one URL: give it one "
                                f"(replicas: 1, a single base_url)")

    def client_endpoint(self, urls: tuple[str, ...], model: str, api_key: str | None, name: str) -> Endpoint:
        """The client's settings for this endpoint, served at `urls` (its replicas) under the name `model`."""
        urls = tuple(url.rstrip("/") for url in urls)
        return Endpoint(base_url=urls[0], model=model, api_key=api_key, name=name,
                        replicas=urls if len(urls) > 1 else (),
                        **{f.name: getattr(self, f.name) for f in fields(Endpoint) if f.name in CLIENT_KEYS})


ENDPOINT_KEYS = tuple(f.name for f in fields(EndpointConfig))
CACHE_KNOBS = ("cache", "cache_max_mib", "cache_dir")  # read by `Endpoints` (generation only)
CLIENT_KEYS = ("max_concurrency", "timeout_s", "max_retries", "backoff_s", "max_wait_s", "max_reply_bytes",
               "max_content_chars", "replica_max_concurrency", "probe_s", "adaptive", "min_concurrency",
               "latency_tolerance")  # the knobs `core/llm.Endpoint` takes as they are
CACHE_DIR = "llm_cache"  # inside the run dir
MISSING = "???"  # a mandatory value left unset: unset until a run needs it (then `required_keys` names it)
# keys that are not endpoint keys but look like one: what to write instead
INSTEAD = {"api_key": "api_key_env, the name of the environment variable that holds the key (a key is never "
                      "written in a config)",
           "url": "base_url", "kind": "server", "concurrency": "max_concurrency", "timeout": "timeout_s",
           "retries": "max_retries"}


def _number(lo: float) -> Check:
    return Check(f"a number >= {lo:g}", lambda v: is_number(v) and v >= lo)


def _nullable(check: Check) -> Check:
    return Check(f"null or {check.must_be}", lambda v: v is None or check.ok(v))


_NAME = Check("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")
# each key's rule (server, base_url and extra_args are checked in `parse_endpoint`)
KEY_CHECKS: dict[str, Check] = {
    "model": _nullable(_NAME), "api_key_env": _nullable(_NAME), "lora": _nullable(_NAME),
    "replicas": integer(1), "max_concurrency": integer(1), "replica_max_concurrency": _nullable(integer(1)),
    "adaptive": BOOL, "min_concurrency": integer(1), "latency_tolerance": _nullable(_number(1)), "probe_s": _number(0.001),
    "timeout_s": POSITIVE, "max_retries": integer(0), "backoff_s": _number(0), "max_wait_s": _number(0),
    "max_reply_bytes": integer(1), "max_content_chars": integer(1), "cache": BOOL,
    "cache_dir": _nullable(Check("a directory path", lambda v: isinstance(v, str) and v.strip() != "")),
    "cache_max_mib": _number(1),
}
FLOAT_KEYS = ("latency_tolerance", "probe_s", "timeout_s", "backoff_s", "max_wait_s", "cache_max_mib")


def _plain(node, path: str) -> Any:
    if isinstance(node, DictConfig):
        try:
            return OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException as exc:
            raise ToolturnError(f"{path}: {str(exc).splitlines()[0]}") from None
    return node


def _unknown(path: str, key) -> ToolturnError:
    if key in INSTEAD:
        return ToolturnError(f"{path}.{key} is not an endpoint key; write {INSTEAD[key]}")
    close = difflib.get_close_matches(str(key), ENDPOINT_KEYS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; the keys are {', '.join(ENDPOINT_KEYS)}"
    return ToolturnError(f"{path}.{key} is not an endpoint key{hint}")


def _urls(path: str, value) -> tuple[str, ...]:
    if value is None:
        return ()
    urls = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else None
    if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
        raise ToolturnError(f"{path}.base_url must be a URL or a non-empty list of URLs, got {value!r}")
    return tuple(u.strip() for u in urls)


def parse_endpoint(node, path: str) -> EndpointConfig:
    """The endpoint config of `node` (a mapping: a config node or a dict), every key checked; a bad one is one
    line naming its full key (`path`.key). A key left `???` is unset: `required_keys` says so where it is needed."""
    plain = _plain(node, path)
    if not isinstance(plain, Mapping):
        raise ToolturnError(f"{path} must be an endpoint mapping ({{server: ..., model: ..., ...}}), got {plain!r}")
    for key in plain:
        if key not in ENDPOINT_KEYS:
            raise _unknown(path, key)
    values = {k: v for k, v in plain.items() if v is not None and v != MISSING}  # null or ???: the default
    for key, check in KEY_CHECKS.items():
        if key in values and not check.ok(values[key]):
            raise ToolturnError(f"{path}.{key} must be {check.must_be}, got {values[key]!r}")
    server = values.get("server")
    if server not in SERVERS:
        if server is None:
            raise ToolturnError(f"{path}.server is not set; add {path}.server={'|'.join(SERVERS)}")
        raise ToolturnError(f"{path}.server must be one of {'|'.join(SERVERS)}, got {server!r}")
    kind = SERVERS[server]
    values["base_url"] = _urls(path, values.get("base_url"))
    args = values.get("extra_args", [])
    if not isinstance(args, (list, tuple)) or not all(isinstance(a, (str, int, float)) for a in args):
        raise ToolturnError(f"{path}.extra_args must be a list of command-line arguments, got {args!r}")
    values["extra_args"] = tuple(map(str, args))
    if kind.managed and values["base_url"]:
        raise ToolturnError(f"{path}.base_url is only for server: none; a {server} server is started by the harness "
                            f"at an address of its own (set {path}.base_url=null, or {path}.server=none)")
    if not kind.managed and values.get("replicas", 1) > 1:
        raise ToolturnError(f"{path}.replicas is for a server the harness starts; with server: none list the "
                            f"replicas' URLs in {path}.base_url")
    for key in ("api_key_env",) if kind.managed else ("extra_args",):
        if values.get(key):
            raise ToolturnError(f"{path}.{key} is only for {'server: none' if kind.managed else 'a managed server'}"
                                f", not server: {server}")
    if values.get("lora") and not kind.lora:
        raise ToolturnError(f"{path}.lora needs server: {'|'.join(k for k, s in SERVERS.items() if s.lora)}, "
                            f"not {server}")
    return EndpointConfig(**{k: float(v) if k in FLOAT_KEYS else v for k, v in values.items()})


def parse_endpoints(node, prefix: str) -> dict[str, EndpointConfig]:
    """Each endpoint of a mapping of named endpoints (`llm.endpoints`), parsed."""
    plain = _plain(node, prefix)
    if not isinstance(plain, Mapping):
        raise ToolturnError(f"{prefix} must be a mapping of endpoint names to endpoints, got {plain!r}")
    return {str(name): parse_endpoint(spec, f"{prefix}.{name}") for name, spec in plain.items()}


def required_keys(prefix: str, specs: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """The dotted keys (under `prefix`, e.g. llm.endpoints) that the endpoints `names` must set: the model, and
    the URL of one the harness does not start. An endpoint `specs` lacks is one line naming the choices."""
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise ToolturnError(f"roles name endpoint(s) {unknown} that {prefix} does not define (defined: {sorted(specs)})")
    keys = []
    for name in sorted(set(names)):
        external = specs[name].get("server") == "none"
        keys += [f"{prefix}.{name}.model"] + ([f"{prefix}.{name}.base_url"] if external else [])
    return keys


@dataclass
class _Live:
    servers: list[ManagedServer]  # one per replica (one for server: none)
    endpoint: Endpoint | None = None  # once they are up


class Endpoints:
    """Context manager: starts what the config needs; `client(name)` inside the event loop. `specs`: name ->
    an `EndpointConfig`, or a node parsed here (its keys named `<prefix>.<name>.key` in errors)."""

    def __init__(self, specs: Mapping[str, EndpointConfig | Any], names: Iterable[str], log_dir: Path,
                 cache_dir: Path | None = None, prefix: str = "llm.endpoints"):
        self.log_dir, self.cache_dir = log_dir, cache_dir
        self.caches: dict[str, ResponseCache] = {}
        self.needed = sorted(set(names))
        self.live: dict[str, _Live] = {}
        self.clients: dict[str, LLMClient] = {}
        unknown = [n for n in self.needed if n not in specs]
        if unknown:
            raise ToolturnError(f"roles name endpoint(s) {unknown} that {prefix} does not define "
                                f"(defined: {sorted(specs)})")
        self.specs = {name: spec if isinstance((spec := specs[name]), EndpointConfig)
                      else parse_endpoint(spec, f"{prefix}.{name}") for name in self.needed}

    def __enter__(self) -> "Endpoints":
        try:
            for name in self.needed:
                e = self.specs[name]
                try:
                    server_spec = ServerSpec(kind=e.server, model=resolve_model(e.model) if e.kind.managed and e.model
                                             else e.model, base_url=e.base_url[0] if e.base_url else None,
                                             api_key_env=e.api_key_env, lora=e.lora, extra_args=list(e.extra_args))
                    if e.kind.managed:
                        self.log_dir.mkdir(parents=True, exist_ok=True)
                    places = place_replicas(e.server, e.replicas, e.extra_args, os.sched_getaffinity(0),
                                            visible_gpus() if e.server == "vllm" and e.replicas > 1 else [])
                    live = self.live[name] = _Live([ManagedServer(server_spec, log_dir=self.log_dir, placement=place)
                                                    for place in places])
                    for server in live.servers:  # the replicas load at once
                        server.spawn()
                    urls = tuple(server.wait_ready() for server in live.servers)
                except ToolturnError as exc:
                    raise ToolturnError(f"endpoint '{name}': {exc}") from None
                first = live.servers[0]
                live.endpoint = e.client_endpoint(e.base_url or urls, first.model_name, first.api_key, name)
                self._open_cache(name, e)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _open_cache(self, name: str, e: EndpointConfig) -> None:
        if self.cache_dir is None or not e.cache:
            return
        root = Path(e.cache_dir).expanduser() if e.cache_dir else Path(self.cache_dir)
        try:
            self.caches[name] = ResponseCache(root, int(e.cache_max_mib * (1 << 20)))
        except OSError as exc:
            raise ToolturnError(f"endpoint '{name}': cannot use {root} as the response cache: "
                                f"{exc.strerror or exc}") from None

    def client(self, name: str) -> LLMClient:
        if name not in self.clients:
            self.clients[name] = LLMClient(self.live[name].endpoint, cache=self.caches.get(name))
        return self.clients[name]

    def stats(self) -> dict:
        """Each client's counters (`LLMClient.stats`), by endpoint name."""
        return {name: client.stats() for name, client in self.clients.items()}

    def model_name(self, name: str) -> str:
        return self.live[name].endpoint.model

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    def __exit__(self, *exc) -> None:
        for cache in self.caches.values():
            cache.close()
        for live in self.live.values():
            for server in live.servers:
                server.stop()
