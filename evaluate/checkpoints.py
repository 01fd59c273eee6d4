"""What `checkpoints=[...]` names, resolved: a served model (base weights, a model dir, a LoRA dir)
with its endpoint spec, or a rule assistant (oracle, do_nothing); and the sampling every request carries."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from toolturn.core.endpoints import resolve_model
from toolturn.core.errors import ToolturnError
from toolturn.core.llm import Sampling
from toolturn.evaluate.report import DO_NOTHING
from toolturn.evaluate.runner import Checkpoint

RULE_ASSISTANTS = ("oracle", DO_NOTHING)


def _base_model(cfg: DictConfig) -> str:
    m = cfg.model
    if m.source == "embedded_smollm2":
        return "embedded:smollm2"
    if m.source == "pretrained" and m.get("path"):
        return str(m.path)
    raise ToolturnError(f"model {m.name} (source {m.source}) has no base weights to serve; list a trained "
                        f"model dir in checkpoints instead of base")


def endpoint_spec(entry: str, cfg: DictConfig) -> dict:
    """The endpoint that serves checkpoint `entry` (base, a model dir or a LoRA adapter dir)."""
    e = OmegaConf.to_container(cfg.endpoint, resolve=True)
    if e["server"] == "none":
        return {**e, "model": e["model"] if entry == "base" else entry}
    if entry == "base":
        return {**e, "model": _base_model(cfg)}
    path = Path(entry).expanduser()
    if (path / "adapter_config.json").exists():
        if e["server"] != "vllm":
            raise ToolturnError(f"checkpoint {entry} is a LoRA adapter: serve it with endpoint.server=vllm, "
                                f"or evaluate its merged model dir")
        return {**e, "model": _base_model(cfg), "lora": str(path.resolve())}
    if not (path / "config.json").exists():
        raise ToolturnError(f"checkpoint {entry}: not a model dir (no config.json) nor a LoRA adapter "
                            f"(no adapter_config.json)")
    return {**e, "model": str(path.resolve())}


def resolve_checkpoints(cfg: DictConfig) -> list[Checkpoint]:
    out = []
    for entry in map(str, cfg.checkpoints):
        if entry in RULE_ASSISTANTS:
            out.append(Checkpoint(entry, entry))
        else:
            out.append(Checkpoint(entry, "model", endpoint_spec(entry, cfg)))
    if DO_NOTHING not in [c.name for c in out]:
        out.append(Checkpoint(DO_NOTHING, DO_NOTHING))
    return out


def request_sampling(s, spec: dict) -> Sampling:
    """Explicit sampling for every request. `transformers serve` decodes greedily unless a request's
    generation_config turns sampling on (and that config replaces the model's): it gets the model's own
    generation_config.json (eos ids, ...) with do_sample and these settings on top."""
    sampling = Sampling(temperature=float(s.temperature), top_p=float(s.top_p), max_tokens=int(s.max_tokens))
    if spec["server"] != "transformers":
        return sampling
    model_dir = Path(resolve_model(spec["model"]))
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    config.update(do_sample=sampling.temperature > 0, temperature=sampling.temperature, top_p=sampling.top_p,
                  max_new_tokens=sampling.max_tokens)
    sampling.generation_config = json.dumps(config, sort_keys=True)
    return sampling
