"""The contracts of the domain registry (core/domains/registry.py).

`DomainPackage` is what a built-in domain (one folder, core/domains/<name>/) gives the registry;
`Source` is what any `domain` config resolves to, built-in or not: how its pristine database is made
and what is known of it beyond its schema. `prepare_domain` reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from toolturn.core.policy import GENERIC, Policy
from toolturn.core.sqlenv import SqlTool
from toolturn.core.tasks.service import Service


class DomainPackage(Protocol):
    """A built-in domain: its business, policy, service actions and tasks, and its seeded database."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def actions(self) -> Sequence[SqlTool]: ...  # the service's tools beside the schema-derived ones
    @property
    def service(self) -> Service: ...  # what its customers ask for (core/tasks/service.py)

    def build(self, path: Path, seed: int) -> None:
        """Create the database at `path` (which must not exist) from `seed`: the same bytes for the same seed."""


@dataclass(frozen=True)
class BuiltinDomain:
    """The `DomainPackage` every built-in domain's `__init__.py` assembles from its concern files."""
    name: str
    description: str
    policy: Policy
    actions: tuple[SqlTool, ...]
    service: Service
    build: Callable[[Path, int], None]


@dataclass(frozen=True)
class Source:
    """A `domain` config resolved by the registry."""
    name: str
    description: str
    identity: dict  # what the pristine copy is made from (source.json): a different identity is refused
    build: Callable[[Path], None]  # writes the pristine database at the given path
    rules: Policy = GENERIC
    actions: tuple[SqlTool, ...] = ()
    service: Service | None = None  # None: schema tasks (core/tasks/programmatic.py)
    shown: str | None = None  # how errors name the database (None: the pristine copy's file name)
    extra_files: tuple[str, ...] = ()  # files the build writes beside the database (removed with it on failure)
