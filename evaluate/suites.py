"""The evaluation suites, by name (`eval=<name>`). A suite owns its tasks and plays samples of them
against a checkpoint; the runner's resume, the metrics and the report are shared by every suite.

Two kinds:

- episodic (our own worlds, `sql_tau`): `async def episode(item, assistant) -> dict` plays one sample;
  the app runs them (`runner.run_checkpoint`: concurrency, a seed per sample, infrastructure retries).
- batch (an official benchmark in its own process, `tau2`, `bfcl`): `async def run_batch(checkpoint,
  todo, write)` gets the samples still to do as `Sample`s, starts what it needs (the checkpoint's
  endpoint, a worker in an isolated venv) and calls `write(row)` as each sample is scored.

    @register("name")
    class MySuite:
        name: str; domain_name: str; user_name: str
        items: list          # each with .id (and .needs_write where a do-nothing floor splits on it)
        parts: tuple[str, ...]  # the reward parts the report tabulates, each a bool in row["parts"]
        def __init__(self, cfg, out_dir, checkpoints): ...  # checkpoints: runner.Checkpoint, resolved
        async def episode(self, item, assistant) -> dict: ...          # episodic, or
        async def run_batch(self, checkpoint, todo, write) -> None: ...  # batch
        def close(self): ...
        # optional: extra_metrics(rows_by_checkpoint) -> dict (metrics["suite_metrics"]),
        #           report_lines(metrics) -> list[str] (a section of report.md),
        #           header() -> dict (top-level keys of metrics.json, e.g. sql_tau's tool_offer and task_kinds),
        #           world (a behaviour.World: the rows are episodes of it, so the behaviour rates apply),
        #           SAMPLE_SETTINGS (the config keys a resume must match), tasks_are (how report.md names items)

A sample row carries checkpoint, task_id, sample, seed, reward (None when not scored), parts,
termination, infra_error (None when scored) and assistant_digest (what the assistant did, to spot
samples that are all the same), and where the suite has task kinds, `kind` (pass^k per kind); anything
else is kept as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolturn.core.errors import ToolturnError

SUITES: dict[str, type] = {}
# suite name -> the module of evaluate/ that registers it (imported on first use: no benchmark's code
# is loaded unless it is asked for)
BUILTIN = {"sql_tau": "sql_tau", "tau2": "tau2_bench", "bfcl": "bfcl_bench"}


@dataclass(frozen=True)
class Sample:
    item: object  # one of the suite's items
    index: int    # the sample number, 0..n-1
    seed: int     # runner.sample_seed: distinct per sample, the same for every checkpoint


def register(name: str):
    def add(cls: type) -> type:
        if name in SUITES:
            raise ValueError(f"evaluation suite {name!r} is registered twice")
        SUITES[name] = cls
        return cls
    return add


def suite_class(name: str) -> type:
    import importlib

    if name in BUILTIN and name not in SUITES:
        importlib.import_module(f"toolturn.evaluate.{BUILTIN[name]}")  # registers itself
    if name not in SUITES:
        raise ToolturnError(f"unknown evaluation suite {name!r}; choose one of {sorted(set(SUITES) | set(BUILTIN))}")
    return SUITES[name]
