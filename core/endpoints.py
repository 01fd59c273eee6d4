"""A run's LLM endpoints: managed servers started once per run, one async client per endpoint.

Each endpoint is a config node (`llm.endpoints.<name>`: server, model, base_url, api_key_env, ...).
Only the endpoints a run names are started; servers are stopped on exit, error or signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from toolturn.core.errors import ToolturnError
from toolturn.core.llm import Endpoint, LLMClient, Sampling
from toolturn.core.servers import ManagedServer, ServerSpec, embedded_smollm2_dir


def sampling(spec) -> Sampling:
    return Sampling(temperature=float(spec.get("temperature", 0.7)), top_p=float(spec.get("top_p", 1.0)),
                    max_tokens=int(spec.get("max_tokens", 512)))


def resolve_model(model: str) -> str:
    """A model name as a server takes it: `embedded:smollm2` is the converted SmolLM2 dir (built once)."""
    if model == "embedded:smollm2":
        return str(embedded_smollm2_dir())
    return model


# endpoint knobs with defaults in `Endpoint`: (type, smallest allowed value)
OPTIONAL_KNOBS = {"backoff_s": (float, 0), "max_wait_s": (float, 0), "max_reply_bytes": (int, 1),
                  "max_content_chars": (int, 1)}


def _optional_knobs(name: str, e) -> dict:
    out = {}
    for key, (kind, low) in OPTIONAL_KNOBS.items():
        value = e.get(key)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < math.inf
        if not number or (kind is int and isinstance(value, float) and not value.is_integer()):
            what = "whole number" if kind is int else "number"
            raise ToolturnError(f"llm.endpoints.{name}.{key} must be a {what} >= {low}, got {value!r}")
        out[key] = kind(value)
    return out


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

    def __init__(self, specs: Mapping[str, Any], names: Iterable[str], log_dir: Path):
        self.specs, self.log_dir = specs, log_dir
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
                    spec = ServerSpec(kind=e.server, model=resolve_model(e.model) if e.server != "none" else e.model,
                                      base_url=e.get("base_url"), api_key_env=e.get("api_key_env"),
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
                    max_retries=int(e.max_retries), name=name, **_optional_knobs(name, e)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def client(self, name: str) -> LLMClient:
        if name not in self.clients:
            self.clients[name] = LLMClient(self.live[name].endpoint)
        return self.clients[name]

    def model_name(self, name: str) -> str:
        return self.live[name].endpoint.model

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    def __exit__(self, *exc) -> None:
        for live in self.live.values():
            live.server.stop()
