"""The evaluation suites, by name (`eval=<name>`). A suite owns its tasks and plays one episode of a task
against a given assistant; the runner, the metrics and the report are shared by every suite.

    @register("name")
    class MySuite:
        name: str; domain: str; user_name: str; items: list[EvalItem-like with .id and .needs_write]
        def __init__(self, cfg, out_dir): ...
        async def episode(self, item, assistant) -> dict: ...   # a sample row
        def close(self): ...
"""

from __future__ import annotations

from toolturn.core.errors import ToolturnError

SUITES: dict[str, type] = {}


def register(name: str):
    def add(cls: type) -> type:
        if name in SUITES:
            raise ValueError(f"evaluation suite {name!r} is registered twice")
        SUITES[name] = cls
        return cls
    return add


def suite_class(name: str) -> type:
    from toolturn.evaluate import sql_tau  # noqa: F401  (registers itself)

    if name not in SUITES:
        raise ToolturnError(f"unknown evaluation suite {name!r}; choose one of {sorted(SUITES)}")
    return SUITES[name]
