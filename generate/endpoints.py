"""The run's LLM endpoints: managed servers started once per run, one async client per endpoint.

Only endpoints that some LLM role names are started. Servers are stopped on exit, error or signal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.llm import Endpoint, LLMClient, Sampling
from toolturn.core.servers import ManagedServer, ServerSpec, embedded_smollm2_dir

ROLES = ("task_generator", "user", "assistant", "tool_simulator", "judge")


def llm_roles(cfg) -> dict[str, str]:
    """role -> endpoint name, for every role played by an LLM in this run."""
    out = {}
    for role in ROLES:
        spec = cfg.roles.get(role)
        if spec is None:
            continue
        plays = spec.get("kind", "llm") == "llm" if role != "tool_simulator" else cfg.tools.mode == "simulated"
        if role == "task_generator" and cfg.tools.get("llm_sql_tools", 0):
            plays = True  # the task-generator endpoint also writes the SQL tools
        if plays:
            out[role] = spec.endpoint
    return out


def sampling(spec) -> Sampling:
    return Sampling(temperature=float(spec.get("temperature", 0.7)), top_p=float(spec.get("top_p", 1.0)),
                    max_tokens=int(spec.get("max_tokens", 512)))


def _resolve_model(model: str) -> str:
    if model == "embedded:smollm2":
        return str(embedded_smollm2_dir())
    return model


@dataclass
class _Live:
    server: ManagedServer | None
    endpoint: Endpoint


class Endpoints:
    """Context manager: starts what the config needs; `client(name)` inside the event loop."""

    def __init__(self, cfg, run_dir: Path):
        self.cfg, self.log_dir = cfg, run_dir / "logs"
        self.roles = llm_roles(cfg)
        self.needed = sorted(set(self.roles.values()))
        self.needed_roles = set(self.roles)
        self.live: dict[str, _Live] = {}
        self.clients: dict[str, LLMClient] = {}
        unknown = [n for n in self.needed if n not in cfg.llm.endpoints]
        if unknown:
            raise ToolturnError(f"roles name endpoint(s) {unknown} that llm.endpoints does not define "
                                f"(defined: {sorted(cfg.llm.endpoints)})")

    def __enter__(self) -> "Endpoints":
        try:
            for name in self.needed:
                e = self.cfg.llm.endpoints[name]
                server = None
                if e.server == "none":
                    if not e.get("base_url"):
                        raise ToolturnError(f"endpoint '{name}' has server=none but no base_url")
                    key = None
                    if e.get("api_key_env"):
                        key = os.environ.get(e.api_key_env)
                        if not key:
                            raise ToolturnError(f"endpoint '{name}': environment variable {e.api_key_env} is not set")
                    base_url, model = e.base_url, e.model
                else:
                    self.log_dir.mkdir(parents=True, exist_ok=True)
                    server = ManagedServer(ServerSpec(kind=e.server, model=_resolve_model(e.model), lora=e.get("lora"),
                                                      extra_args=list(e.get("extra_args") or [])), log_dir=self.log_dir)
                    base_url, model, key = server.start(), server.model_name, None
                self.live[name] = _Live(server, Endpoint(
                    base_url=base_url, model=model, api_key=key, max_concurrency=int(e.max_concurrency),
                    timeout_s=float(e.timeout_s), max_retries=int(e.max_retries)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def client(self, name: str) -> LLMClient:
        if name not in self.clients:
            self.clients[name] = LLMClient(self.live[name].endpoint)
        return self.clients[name]

    def role_endpoint(self, role: str) -> str:
        return self.roles[role]

    def model_name(self, name: str) -> str:
        return self.live[name].endpoint.model

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    def __exit__(self, *exc) -> None:
        for live in self.live.values():
            if live.server is not None:
                live.server.stop()
