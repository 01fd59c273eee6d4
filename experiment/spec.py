"""An experiment as typed data: the arms a `conf/experiment/<name>.yaml` names.

    datasets:     name -> how it is made: toolturn-generate overrides, or `source: apigen_mt | nemotron`
                  (a paper baseline through `python -m toolturn.train.convert`)
    models:       name -> toolturn-train overrides and `data: [dataset, ...]`; without `data` the model's
                  own weights are evaluated untrained (the base arm); `checkpoint: oracle` (the rule-based
                  oracle: the ceiling) or `checkpoint: PATH` (a model trained elsewhere) is evaluated as it is
    evaluations:  name -> toolturn-eval overrides and `models: [model, ...]`
    common:       overrides every stage of one kind starts from (an arm's own keys win)

Every arm's keys are the stage's own Hydra overrides, so nothing here re-implements a stage: a new arm is
a few lines of YAML, and a typo is caught by the stage's own config check (`dry_run=true` runs them all).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from toolturn.core.errors import ToolturnError

KINDS = ("generate", "train", "evaluate")
CONVERTERS = ("apigen_mt", "nemotron")  # train/convert.py's sources
EXPERIMENT_KEYS = {"name", "title", "description", "common", "datasets", "models", "evaluations", "compare",
                   "resources", "paper"}
RESOURCE_KEYS = {"gpus", "cpus", "mem_gb", "time_min", "note", "launch"}


@dataclass(frozen=True)
class Resources:
    """What one stage job needs: shown by dry runs, and what a cluster launcher would ask for."""

    gpus: int = 0
    cpus: int = 2
    mem_gb: int = 16
    time_min: int = 60
    note: str = ""
    launch: str = ""  # a command that runs the stage's module instead of `python -m`, e.g. "accelerate launch ... -m"

    def line(self) -> str:
        device = f"{self.gpus} GPU" + ("s" if self.gpus != 1 else "") if self.gpus else "CPU only"
        note = f"; {self.note}" if self.note else ""
        note += f"; launched by {self.launch.split()[0]}" if self.launch else ""
        return f"{device}, {self.cpus} CPUs, {self.mem_gb} GB, ~{self.time_min} min{note}"


@dataclass(frozen=True)
class DatasetArm:
    name: str
    source: str  # generate | apigen_mt | nemotron
    overrides: dict[str, Any]


@dataclass(frozen=True)
class ModelArm:
    name: str
    data: tuple[str, ...]  # dataset arms; empty: the base weights, evaluated untrained
    overrides: dict[str, Any]
    checkpoint: str = "base"  # what toolturn-eval's checkpoints=[...] names when the arm is not trained here

    @property
    def trained(self) -> bool:
        return bool(self.data)


@dataclass(frozen=True)
class EvalArm:
    name: str
    models: tuple[str, ...]
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    description: str
    datasets: dict[str, DatasetArm]
    models: dict[str, ModelArm]
    evaluations: dict[str, EvalArm]
    compare: tuple[tuple[str, str], ...]  # model pairs compared task by task
    resources: dict[str, Resources] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)  # the paper's numbers, printed beside ours

    def resources_for(self, kind: str) -> Resources:
        return self.resources.get(kind, Resources())


def _unknown(keys, known, where: str) -> None:
    extra = sorted(set(keys) - set(known))
    if extra:
        close = difflib.get_close_matches(extra[0], list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; expected {', '.join(sorted(known))}"
        raise ToolturnError(f"unknown key '{extra[0]}' in {where}{hint}")


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ToolturnError(f"{where} must be a mapping, got {value!r}")
    return dict(value)


def _names(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ToolturnError(f"{where} must be a list of names, got {value!r}")
    return tuple(value)


def _refs(names: tuple[str, ...], known: dict, what: str, where: str) -> None:
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; it names {', '.join(sorted(known)) or 'none'}"
            raise ToolturnError(f"{where} names {what} '{n}', which the experiment does not define{hint}")


def parse(plain: dict) -> Experiment:
    """The experiment of a resolved `experiment:` config node; one-line errors for what cannot work."""
    _unknown(plain, EXPERIMENT_KEYS, "experiment")
    name = plain.get("name")
    if not isinstance(name, str) or not name:
        raise ToolturnError("experiment.name must be a non-empty string")
    common = _mapping(plain.get("common"), "experiment.common")
    _unknown(common, KINDS, "experiment.common")
    common = {k: _mapping(common.get(k), f"experiment.common.{k}") for k in KINDS}

    datasets = {}
    for dname, spec in _mapping(plain.get("datasets"), "experiment.datasets").items():
        spec = _mapping(spec, f"experiment.datasets.{dname}")
        source = spec.pop("source", "generate")
        if source != "generate" and source not in CONVERTERS:
            raise ToolturnError(f"experiment.datasets.{dname}.source is {source!r}; expected generate or one of "
                                f"{', '.join(CONVERTERS)}")
        if source != "generate":
            _unknown(spec, {"input", "limit"}, f"experiment.datasets.{dname} (a converted baseline)")
        overrides = {**common["generate"], **spec} if source == "generate" else spec
        datasets[dname] = DatasetArm(dname, source, overrides)

    models = {}
    for mname, spec in _mapping(plain.get("models"), "experiment.models").items():
        spec = _mapping(spec, f"experiment.models.{mname}")
        data = _names(spec.pop("data", []) or [], f"experiment.models.{mname}.data")
        _refs(data, datasets, "dataset", f"experiment.models.{mname}.data")
        checkpoint = spec.pop("checkpoint", "base")
        if data and checkpoint != "base":
            raise ToolturnError(f"experiment.models.{mname} has both data (train it here) and checkpoint "
                                f"{checkpoint!r} (evaluate it as it is); keep one")
        if not isinstance(checkpoint, str) or not checkpoint:
            raise ToolturnError(f"experiment.models.{mname}.checkpoint must be base, oracle or a model dir")
        models[mname] = ModelArm(mname, data, {**common["train"], **spec}, checkpoint)

    evaluations = {}
    for ename, spec in _mapping(plain.get("evaluations"), "experiment.evaluations").items():
        spec = _mapping(spec, f"experiment.evaluations.{ename}")
        arms = _names(spec.pop("models", []), f"experiment.evaluations.{ename}.models")
        if not arms:
            raise ToolturnError(f"experiment.evaluations.{ename}.models is empty")
        _refs(arms, models, "model", f"experiment.evaluations.{ename}.models")
        evaluations[ename] = EvalArm(ename, arms, {**common["evaluate"], **spec})

    compare = []
    for pair in plain.get("compare") or []:
        pair = _names(pair, "experiment.compare entries")
        if len(pair) != 2:
            raise ToolturnError(f"experiment.compare entries are pairs of models, got {list(pair)}")
        _refs(pair, models, "model", "experiment.compare")
        compare.append((pair[0], pair[1]))

    resources = {}
    for kind, spec in _mapping(plain.get("resources"), "experiment.resources").items():
        _unknown([kind], KINDS, "experiment.resources")
        spec = _mapping(spec, f"experiment.resources.{kind}")
        _unknown(spec, RESOURCE_KEYS, f"experiment.resources.{kind}")
        resources[kind] = Resources(**spec)

    return Experiment(name, str(plain.get("title") or name), str(plain.get("description") or "").strip(),
                      datasets, models, evaluations, tuple(compare), resources,
                      _mapping(plain.get("paper"), "experiment.paper"))
