"""The stages an experiment runs, in order, each as the command line of a stage's own entry point.

    generate:<dataset>   toolturn-generate ... out_dir=OUT/data/<dataset>
    audit:<dataset>      toolturn-audit OUT/data/<dataset>              (replays every tool call)
    convert:<dataset>    python -m toolturn.train.convert <source> OUT/data/<dataset>
    train:<model>        toolturn-train ... data.paths=[...] out_dir=OUT/train/<model>
    evaluate:<eval>:<model>
                         toolturn-eval ... checkpoints=[base | OUT/train/<model>/merged] out_dir=OUT/evaluate/<eval>/<model>
    report               the experiment's comparison (in-process: experiment/report.py)

One evaluation dir per (evaluation, model): adding an arm re-runs nothing that was already scored, and
each is one job on a cluster. Every stage writes under OUT and logs to one W&B group.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolturn.experiment.spec import Experiment, Resources

# console script -> module (the subprocess runs `python -m module`, the same code the script runs)
ENTRY_POINTS = {"toolturn-generate": "toolturn.generate.run", "toolturn-audit": "toolturn.generate.audit",
                "toolturn-train": "toolturn.train.recipe", "toolturn-eval": "toolturn.evaluate.run",
                "toolturn-convert": "toolturn.train.convert"}
DISPLAY = {"toolturn-convert": "python -m toolturn.train.convert"}
STAGE_KINDS = ("generate", "audit", "train", "evaluate", "report")  # `stage=` values; convert is a generate kind
_PLAIN = re.compile(r"^[\w./:@+-]*$")


@dataclass
class Stage:
    name: str  # generate:user_oriented, train:tuned, evaluate:retail:tuned, report
    kind: str  # generate | convert | audit | train | evaluate | report
    out_dir: Path
    script: str = ""  # console script (none for report)
    args: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # upstream stages, whose outputs are this stage's inputs
    resources: Resources = field(default_factory=Resources)
    arm: str = ""  # the dataset, model or evaluation arm it belongs to

    @property
    def group(self) -> str:
        """What `stage=` selects it by."""
        return "generate" if self.kind == "convert" else self.kind

    def command(self) -> str:
        if not self.script:
            return "(in-process) experiment report"
        head = f"{self.resources.launch} {ENTRY_POINTS[self.script]}" if self.resources.launch else \
            DISPLAY.get(self.script, self.script)
        return " ".join([head, *map(_quote, self.args)])

    def argv(self, python: str) -> list[str]:
        launch = shlex.split(self.resources.launch) if self.resources.launch else [python, "-m"]
        return [*launch, ENTRY_POINTS[self.script], *self.args]


def dataset_dir(out: Path, name: str) -> Path:
    return out / "data" / name


def _quote(arg: str) -> str:
    return arg if _PLAIN.match(arg.partition("=")[2]) and _PLAIN.match(arg.partition("=")[0]) else shlex.quote(arg)


def value(v: Any) -> str:
    """A YAML value as a Hydra override value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{value(x)}" for k, x in v.items()) + "}"
    s = str(v)
    return s if re.match(r"^[\w./@-]+$", s) and s not in ("true", "false", "null") else json.dumps(s)


def overrides(spec: dict[str, Any]) -> list[str]:
    """An arm's mapping as Hydra overrides. A mapping under a top-level key is spread one level
    ({sampling: {max_tokens: 96}} -> sampling.max_tokens=96, so that a scalar at a group's key still selects
    an option: model: tiny_qwen3); deeper mappings go whole, which Hydra merges into the node (or sets where it
    is null: eval.user_simulator.endpoint: {...})."""
    out = []
    for k, v in spec.items():
        if isinstance(v, dict) and v and "." not in k:
            out += [f"{k}.{k2}={value(v2)}" for k2, v2 in v.items()]
        else:
            out.append(f"{k}={value(v)}")
    return out


def _logger(logger: dict[str, Any], group: str) -> list[str]:
    if logger.get("name") == "none":
        return ["logger=none"]
    return [f"logger={logger.get('name', 'wandb')}", f"logger.group={value(group)}",
            *(f"logger.{k}={value(logger[k])}" for k in ("mode", "project", "entity") if logger.get(k) is not None)]


def build(exp: Experiment, out: Path, logger: dict[str, Any]) -> list[Stage]:
    """Every stage of `exp` under `out`, upstream before downstream."""
    out = out.resolve()
    log = _logger(logger, exp.name)
    stages: list[Stage] = []
    produced: dict[str, str] = {}  # dataset arm -> the stage whose output training reads

    for d in exp.datasets.values():
        run_dir = dataset_dir(out, d.name)
        if d.source == "generate":
            stages.append(Stage(f"generate:{d.name}", "generate", run_dir, "toolturn-generate",
                                [*overrides(d.overrides), f"out_dir={run_dir}", "progress=false", *log],
                                resources=exp.resources_for("generate"), arm=d.name))
            stages.append(Stage(f"audit:{d.name}", "audit", run_dir, "toolturn-audit", [str(run_dir)],
                                needs=[f"generate:{d.name}"], resources=Resources(cpus=1, mem_gb=4, time_min=5),
                                arm=d.name))
            produced[d.name] = f"audit:{d.name}"
        else:
            extra = [f"--input={d.overrides['input']}"] if d.overrides.get("input") else []
            extra += [f"--limit={d.overrides['limit']}"] if d.overrides.get("limit") else []
            stages.append(Stage(f"convert:{d.name}", "convert", run_dir, "toolturn-convert",
                                [d.source, str(run_dir), *extra], resources=Resources(cpus=4, mem_gb=16, time_min=30),
                                arm=d.name))
            produced[d.name] = f"convert:{d.name}"

    checkpoint: dict[str, str] = {}  # model arm -> what toolturn-eval's checkpoints=[...] names
    for m in exp.models.values():
        if not m.trained:
            checkpoint[m.name] = m.checkpoint
            continue
        train_dir = out / "train" / m.name
        paths = [str(dataset_dir(out, d)) for d in m.data]
        stages.append(Stage(f"train:{m.name}", "train", train_dir, "toolturn-train",
                            [*overrides(m.overrides), f"data.paths={value(paths)}", f"out_dir={train_dir}",
                             "progress=lines", *log],
                            needs=[produced[d] for d in m.data], resources=exp.resources_for("train"), arm=m.name))
        checkpoint[m.name] = str(train_dir / "merged")

    for e in exp.evaluations.values():
        offer = _tool_offer(exp, e)
        # every arm's tasks are held out from every arm's generated training data, so all face the same tasks
        held_out = [d for d in dict.fromkeys(d for name in e.models for d in exp.models[name].data)
                    if exp.datasets[d].source == "generate"] if _sql_tau(e.overrides) else []
        for name in e.models:
            m = exp.models[name]
            eval_dir = out / "evaluate" / e.name / name
            model = {"model": m.overrides["model"]} if "model" in m.overrides else {}
            spec = {**model, **offer, **e.overrides}
            train_data = [str(dataset_dir(out, d)) for d in held_out]
            stages.append(Stage(f"evaluate:{e.name}:{name}", "evaluate", eval_dir, "toolturn-eval",
                                [*overrides(spec), f"checkpoints={value([checkpoint[name]])}",
                                 *([f"train_data={value(train_data)}"] if train_data else []),
                                 f"out_dir={eval_dir}", "progress=false", *log],
                                needs=[*([f"train:{name}"] if m.trained else []), *(produced[d] for d in held_out)],
                                resources=exp.resources_for("evaluate"), arm=e.name))

    stages.append(Stage("report", "report", out / "report",
                        needs=[s.name for s in stages if s.kind in ("evaluate", "train", "audit", "convert")],
                        resources=Resources(cpus=1, mem_gb=2, time_min=2)))
    return stages


def _tool_offer(exp: Experiment, e) -> dict[str, Any]:
    """Every model of an evaluation sees the tool offer its trained models' datasets were made with (the base
    arm included, so that all arms face the same prompt shape); left to toolturn-eval when they disagree."""
    if not _sql_tau(e.overrides) or "eval.tools_per_episode" in e.overrides:
        return {}
    offers = {exp.datasets[d].overrides.get("tools_per_dialogue") for m in e.models for d in exp.models[m].data
              if exp.datasets[d].source == "generate"}
    return {"eval.tools_per_episode": offers.pop()} if len(offers) == 1 and None not in offers else {}


def _sql_tau(spec: dict) -> bool:
    """Only eval=sql_tau makes held-out tasks that could leak from our own generated training data."""
    return spec.get("eval", "sql_tau") == "sql_tau"
