"""A run's LLM endpoints: managed servers started once per run, one async client per endpoint.

Each endpoint is a config node (`llm.endpoints.<name>`: server, model, base_url, api_key_env, ...).
Only the endpoints a run names are started; servers are stopped on exit, error or signal. An external
endpoint's base_url may be a list: replicas of one model (`core/replicas.py`). With a `cache_dir` (generation
passes one; evaluation does not, so that its samples stay independent) each endpoint whose `cache` is on
answers repeated requests from a response cache (`core/llm_cache.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from toolturn.core.errors import ToolturnError
from toolturn.core.llm import Endpoint, LLMClient, Sampling
from toolturn.core.llm_cache import ResponseCache
from toolturn.core.servers import ManagedServer, ServerSpec, embedded_smollm2_dir


def sampling(spec) -> Sampling:
    return Sampling(temperature=float(spec.get("temperature", 0.7)), top_p=float(spec.get("top_p", 1.0)),
                    max_tokens=int(spec.get("max_tokens", 512)))


def resolve_model(model: str) -> str:
    """A model name as a server takes it: `embedded:smollm2` is the converted SmolLM2 dir (built once)."""
    if model == "embedded:smollm2":
        return str(embedded_smollm2_dir())
    return model


# endpoint knobs with defaults in `Endpoint` (null or absent: the default): (type, smallest allowed value)
OPTIONAL_KNOBS = {"backoff_s": (float, 0), "max_wait_s": (float, 0), "max_reply_bytes": (int, 1),
                  "max_content_chars": (int, 1), "replica_max_concurrency": (int, 1), "probe_s": (float, 0.001),
                  "adaptive": (bool, None), "min_concurrency": (int, 1), "latency_tolerance": (float, 1)}
# knobs of the response cache, read by `Endpoints` (generation only)
CACHE_KNOBS = ("cache", "cache_max_mib", "cache_dir")
CACHE_MAX_MIB = 4096
CACHE_DIR = "llm_cache"  # inside the run dir


def _knob(name: str, e, key: str, kind: type, low) -> Any:
    value = e.get(key)
    if value is None:
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise ToolturnError(f"llm.endpoints.{name}.{key} must be true or false, got {value!r}")
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < math.inf
    if not number or (kind is int and isinstance(value, float) and not value.is_integer()):
        what = "whole number" if kind is int else "number"
        raise ToolturnError(f"llm.endpoints.{name}.{key} must be a {what} >= {low}, got {value!r}")
    return kind(value)


def _optional_knobs(name: str, e) -> dict:
    return {key: value for key, (kind, low) in OPTIONAL_KNOBS.items()
            if (value := _knob(name, e, key, kind, low)) is not None}


def base_urls(name: str, e) -> list[str] | None:
    """The endpoint's base_url as a list (None when unset): one URL, or the replicas an external endpoint lists."""
    value = e.get("base_url")
    if value is None:
        return None
    urls = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else [value]
    if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
        raise ToolturnError(f"llm.endpoints.{name}.base_url must be a URL or a non-empty list of URLs, got {value!r}")
    if len(urls) > 1 and e.get("server") != "none":
        raise ToolturnError(f"llm.endpoints.{name}.base_url lists {len(urls)} URLs, but only an external endpoint "
                            f"(server: none) has replicas")
    return [u.strip() for u in urls]


@dataclass
class _Live:
    server: ManagedServer
    endpoint: Endpoint


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


class Endpoints:
    """Context manager: starts what the config needs; `client(name)` inside the event loop."""

    def __init__(self, specs: Mapping[str, Any], names: Iterable[str], log_dir: Path, cache_dir: Path | None = None):
        self.specs, self.log_dir, self.cache_dir = specs, log_dir, cache_dir
        self.caches: dict[str, ResponseCache] = {}
        self.needed = sorted(set(names))
        self.live: dict[str, _Live] = {}
        self.clients: dict[str, LLMClient] = {}
        unknown = [n for n in self.needed if n not in specs]
        if unknown:
            raise ToolturnError(f"roles name endpoint(s) {unknown} that llm.endpoints does not define "
                                f"(defined: {sorted(specs)})")

    def __enter__(self) -> "Endpoints":
        try:
            for name in self.needed:
                e = self.specs[name]
                try:
                    urls = base_urls(name, e)
                    spec = ServerSpec(kind=e.server, model=resolve_model(e.model) if e.server != "none" else e.model,
                                      base_url=urls[0] if urls else None, api_key_env=e.get("api_key_env"),
                                      lora=e.get("lora"), extra_args=list(e.get("extra_args") or []))
                    if e.server != "none":
                        self.log_dir.mkdir(parents=True, exist_ok=True)
                    server = ManagedServer(spec, log_dir=self.log_dir)
                    base_url = server.start()
                except ToolturnError as exc:
                    raise ToolturnError(f"endpoint '{name}': {exc}") from None
                self.live[name] = _Live(server, Endpoint(
                    base_url=base_url, model=server.model_name, api_key=server.api_key,
                    max_concurrency=int(e.max_concurrency), timeout_s=float(e.timeout_s),
                    max_retries=int(e.max_retries), name=name, replicas=tuple(urls) if urls and len(urls) > 1 else (),
                    **_optional_knobs(name, e)))
                self._open_cache(name, e)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _open_cache(self, name: str, e) -> None:
        if self.cache_dir is None or _knob(name, e, "cache", bool, None) is False:
            return
        mib = _knob(name, e, "cache_max_mib", float, 1) or CACHE_MAX_MIB
        where = e.get("cache_dir")
        if where is not None and not (isinstance(where, str) and where.strip()):
            raise ToolturnError(f"llm.endpoints.{name}.cache_dir must be a directory path, got {where!r}")
        root = Path(where).expanduser() if where else Path(self.cache_dir)
        try:
            self.caches[name] = ResponseCache(root, int(mib * (1 << 20)))
        except OSError as exc:
            raise ToolturnError(f"llm.endpoints.{name}: cannot use {root} as the response cache: "
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
        for live in self.live.values():
            live.server.stop()
