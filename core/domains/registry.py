"""The domain registry: every domain a `domain` config can name, with its factory (as tau2-bench's
registry.py names its environments). Built-in domains register a `DomainPackage` under their name;
database sources register a factory under their kind (`sqlite`: bring your own file, `tau2`: τ²-bench's
databases converted). A name registered twice is an error. `REGISTRY.resolve(cfg, seed)` turns any
`domain` config into a `Source` (core/domains/contract.py), which `prepare_domain` materialises.
"""

from __future__ import annotations

from typing import Callable

from toolturn.core.errors import ToolturnError
from toolturn.core.tasks.service import Service

from . import airline, retail, telecom
from .contract import DomainPackage, Source
from .databases import sqlite_source, tau2_source

SourceFactory = Callable[..., Source]  # (the `domain` config, the run's seed) -> Source


class Registry:
    def __init__(self) -> None:
        self._domains: dict[str, DomainPackage] = {}
        self._kinds: dict[str, SourceFactory] = {}

    def add_domain(self, domain: DomainPackage) -> None:
        if domain.name in self._domains:
            raise ToolturnError(f"built-in domain '{domain.name}' is registered twice")
        self._domains[domain.name] = domain

    def add_kind(self, kind: str, factory: SourceFactory) -> None:
        if kind in self._kinds or kind == "builtin":
            raise ToolturnError(f"domain kind '{kind}' is registered twice")
        self._kinds[kind] = factory

    def names(self) -> tuple[str, ...]:
        return tuple(self._domains)

    def domain(self, name: str) -> DomainPackage:
        if name not in self._domains:
            raise ToolturnError(f"unknown built-in domain '{name}'; choose one of {list(self._domains)} "
                                f"or domain=sqlite domain.path=FILE")
        return self._domains[name]

    def resolve(self, cfg, seed: int) -> Source:
        """cfg: the `domain` config group ({kind: builtin, name}, {kind: sqlite, path, name?} or
        {kind: tau2, source, name?, policy_files?, data_dir?})."""
        kind = cfg.get("kind")
        if kind == "builtin":
            d = self.domain(cfg.name)
            return Source(name=d.name, description=d.description, rules=d.policy, actions=tuple(d.actions),
                          service=d.service, identity={"kind": "builtin", "name": d.name, "seed": seed},
                          build=lambda tmp: d.build(tmp, seed))
        if kind not in self._kinds:
            kinds = ["builtin", *self._kinds]
            raise ToolturnError(f"unknown domain kind '{kind}' (expected {', '.join(kinds[:-1])} or {kinds[-1]})")
        return self._kinds[kind](cfg, seed)

    def service(self, cfg) -> Service | None:
        """The service tasks of a `domain` config's domain (None: a database without them)."""
        return self.domain(cfg.name).service if cfg.get("kind") == "builtin" else None


REGISTRY = Registry()
for _package in (retail, airline, telecom):
    REGISTRY.add_domain(_package.DOMAIN)
REGISTRY.add_kind("sqlite", sqlite_source)
REGISTRY.add_kind("tau2", tau2_source)
