"""What `checkpoints=[...]` names, resolved: a served model (base weights, a model dir, a LoRA dir)
with its endpoint spec, or a rule assistant (oracle, do_nothing); and the sampling every request carries.

Each checkpoint's *identity* says which model its label means, so that a label cannot silently change
meaning between two runs in one out_dir (`check_identities`, against `identities.json`):

    label      the name in every output (base, a path, oracle, do_nothing)
    kind       model | adapter (a local dir, content-hashed) | endpoint (an external server's model) | rule
    model      what the requests name: the served dir or Hub id, the external model name, or rule:<name>
    path       the local dir whose content is hashed (a model or LoRA dir; base: the resolved base model dir)
    sha256     core/lineage.model_identity(path)["sha256"], with each file's hash in `files`
    base_url   an external endpoint's address
    base_model a LoRA adapter's: {model, path, sha256} of the model it is served on

A trained checkpoint's dir may hold `toolturn_lineage.json` (written by training): its
`tools_per_dialogue` is the tool offer the model was trained on (`Checkpoint.trained_tools`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from toolturn.core.checks import is_int
from toolturn.core.endpoints import SERVERS, EndpointConfig, parse_endpoint, resolve_model
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write
from toolturn.core.lineage import model_identity, short
from toolturn.core.llm import Sampling
from toolturn.evaluate.runner import DO_NOTHING, Checkpoint

RULE_ASSISTANTS = ("oracle", DO_NOTHING)


def _base_model(cfg: DictConfig) -> str:
    m = cfg.model
    if m.source == "embedded_smollm2":
        return "embedded:smollm2"
    if m.source == "pretrained" and m.get("path"):
        return str(m.path)
    raise ToolturnError(f"model {m.name} (source {m.source}) has no base weights to serve; list a trained "
                        f"model dir in checkpoints instead of base")


def model_under_test(cfg: DictConfig) -> EndpointConfig:
    """The `endpoint` node: the server every checkpoint is served on. Its `model` is what checkpoint `base` names
    (a managed server's null: the `model` group's weights); a LoRA is always a checkpoint's own."""
    e = parse_endpoint(cfg.endpoint, "endpoint")
    if e.lora is not None:
        raise ToolturnError("endpoint.lora is decided by each checkpoint: list the adapter dir in checkpoints=[...] "
                            "and set endpoint.lora=null")
    return e


def endpoint_spec(entry: str, cfg: DictConfig) -> EndpointConfig:
    """The endpoint that serves checkpoint `entry` (base, a model dir or a LoRA adapter dir)."""
    e = model_under_test(cfg)
    if not e.kind.managed:
        return replace(e, model=e.model if entry == "base" else entry)
    base = e.model or _base_model(cfg)
    if entry == "base":
        return replace(e, model=base)
    path = Path(entry).expanduser()
    if (path / "adapter_config.json").exists():
        if not e.kind.lora:
            lora = "|".join(k for k, s in SERVERS.items() if s.lora)
            raise ToolturnError(f"checkpoint {entry} is a LoRA adapter: serve it with endpoint.server={lora}, "
                                f"or evaluate its merged model dir")
        return replace(e, model=base, lora=str(path.resolve()))
    if not (path / "config.json").exists():
        raise ToolturnError(f"checkpoint {entry}: not a model dir (no config.json) nor a LoRA adapter "
                            f"(no adapter_config.json)")
    return replace(e, model=str(path.resolve()))


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _content(path: Path) -> dict:
    """kind (model | adapter), path, sha256 and files of a local model or adapter dir."""
    got = model_identity(path)
    return {"kind": got["kind"], "path": str(path.resolve()), "sha256": got["sha256"], "files": got["files"]}


def _served(model: str) -> dict:
    """A managed server's model: a local dir (the embedded SmolLM2 resolved to its dir) is hashed; a Hub id
    is only named."""
    path = Path(resolve_model(model)).expanduser()
    return {"kind": "model", "model": model, **(_content(path) if _is_model_dir(path) else {})}


def identity(label: str, spec: EndpointConfig | None) -> dict:
    """Which model checkpoint `label` means (the fields in the module docstring); `spec`: its endpoint spec,
    None for a rule assistant."""
    out = {"label": label, "kind": "rule", "model": f"rule:{label}", "path": None, "sha256": None, "files": {},
           "base_url": None, "base_model": None}
    if spec is None:
        return out
    if not spec.kind.managed:
        urls = spec.base_url
        out.update(kind="endpoint", model=spec.model, base_url=urls[0] if len(urls) == 1 else list(urls))
        local = Path(spec.model).expanduser()
        if _is_model_dir(local):  # the external server's model named by a dir that is readable here too
            out.update(_content(local))
        return out
    if spec.lora:
        base = _served(spec.model)
        out.update(model=spec.model, **_content(Path(spec.lora)),
                   base_model={k: base.get(k) for k in ("model", "path", "sha256")})
        return out
    out.update(_served(spec.model))
    return out


def model_key(i: dict) -> tuple:
    """What must be equal for two identities to be the same model: the content where it was hashed (wherever
    the dir lies), else the model's name (an external server restarted at another address still serves it)."""
    if i.get("sha256"):
        base = i.get("base_model") or {}
        return i["kind"], i["sha256"], base.get("sha256") or base.get("model")
    return i["kind"], i["model"]


def describe(i: dict) -> str:
    """One line naming an identity, e.g. `model /runs/x/merged (sha256 1a2b3c4d5e6f)`."""
    if i["kind"] == "rule":
        return f"rule assistant {i['label']}"
    text = f"{i['kind']} {i['model']}"
    if i.get("path") and i["path"] != i["model"]:
        text += f" = {i['path']}"
    if i.get("base_url"):
        text += f" at {i['base_url']}"
    text += f" (sha256 {short(i['sha256'])})" if i.get("sha256") else " (no local dir: not content-hashed)"
    if i.get("base_model"):
        b = i["base_model"]
        text += f" on {b['model']}" + (f" (sha256 {short(b['sha256'])})" if b.get("sha256") else "")
    return text


LINEAGE_FILE = "toolturn_lineage.json"  # written by training into every checkpoint dir it saves


def trained_tools(label: str, i: dict) -> int | None:
    """`tools_per_dialogue` of the checkpoint's training data (0 = all tools), from the lineage file in its
    dir; None when it has no lineage file or the file records none."""
    path = Path(i["path"]) / LINEAGE_FILE if i.get("path") else None
    if path is None or not path.exists():
        return None
    try:
        value = json.loads(path.read_text()).get("tools_per_dialogue")
    except (OSError, ValueError, AttributeError):
        raise ToolturnError(f"checkpoint {label}: {path} is not a readable JSON object") from None
    if value is not None and not (is_int(value) and value >= 0):
        raise ToolturnError(f"checkpoint {label}: tools_per_dialogue in {path} must be a non-negative integer "
                            f"or null, got {value!r}")
    return value


def _checkpoint(entry: str, cfg: DictConfig) -> Checkpoint:
    if entry in RULE_ASSISTANTS:
        return Checkpoint(entry, entry, identity=identity(entry, None))
    spec = endpoint_spec(entry, cfg)
    i = identity(entry, spec)
    return Checkpoint(entry, "model", spec, i, trained_tools(entry, i))


def resolve_checkpoints(cfg: DictConfig) -> list[Checkpoint]:
    entries = list(map(str, cfg.checkpoints))
    return [_checkpoint(e, cfg) for e in entries + ([DO_NOTHING] if DO_NOTHING not in entries else [])]


def check_identities(path: Path, checkpoints: list[Checkpoint]) -> None:
    """Record each label's identity in `path` on its first run; refuse a label that now means another model
    (its samples in this out_dir are the other model's)."""
    recorded = json.loads(path.read_text()) if path.exists() else {}
    for c in checkpoints:
        old = recorded.get(c.name)
        if old is not None and model_key(old) != model_key(c.identity):
            raise ToolturnError(f"checkpoint {c.name} in {path.parent} was {describe(old)} and is now "
                                f"{describe(c.identity)}; its samples there are the other model's: use another "
                                f"out_dir")
    recorded.update({c.name: c.identity for c in checkpoints})
    atomic_write(path, json.dumps(recorded, indent=1, sort_keys=True))


def request_sampling(s, spec: EndpointConfig) -> Sampling:
    """Explicit sampling for every request. `transformers serve` decodes greedily unless a request's
    generation_config turns sampling on (and that config replaces the model's): it gets the model's own
    generation_config.json (eos ids, ...) with do_sample and these settings on top."""
    sampling = Sampling(temperature=float(s.temperature), top_p=float(s.top_p), max_tokens=int(s.max_tokens))
    if spec.server != "transformers":
        return sampling
    model_dir = Path(resolve_model(spec.model))
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    config.update(do_sample=sampling.temperature > 0, temperature=sampling.temperature, top_p=sampling.top_p,
                  max_new_tokens=sampling.max_tokens)
    sampling.generation_config = json.dumps(config, sort_keys=True)
    return sampling
