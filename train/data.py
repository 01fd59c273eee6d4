"""Training data: load run dirs / HF dataset dirs, deduplicate, check, split, mix, and tokenize.

Order of operations (each step counted in `DataReport`):

1. load every source (a run dir's `dataset/`, or any `save_to_disk` dir in the same messages + tools format);
2. deduplicate by record id across all sources (the first occurrence wins);
3. drop or refuse rows the template cannot render faithfully (`invalid=strict|skip`);
4. keep or drop `reasoning_content` (`reasoning=keep|drop`, or `auto`: keep for a thinking model);
5. tokenize with the tokenizer's chat template (ours) and its `{% generation %}` assistant mask, which leaves out
   the assistant turns marked `"weight": 0` (context, not targets: a deliberate slip); rows longer than
   `max_length` are dropped or cut after the last assistant turn that fits (`overlong=drop|truncate`);
6. split by dialogue: the `val_fraction` of ids with the smallest sha256(id) go to validation, so a dialogue's
   turns never straddle the split and the split does not move with the seed;
7. mix the training rows: a source's weight 0.25 keeps a seeded quarter of its rows, 2 repeats them twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolturn.core.errors import ToolturnError
from toolturn.core.rundir import RunDir, record_digest

ROLES = ("system", "user", "assistant", "tool")
INVALID_POLICIES = ("strict", "skip")
OVERLONG_POLICIES = ("drop", "truncate")
REASONING_POLICIES = ("drop", "keep")
REASONING_CHOICES = ("auto", *REASONING_POLICIES)  # data.reasoning; auto: keep for a thinking model, drop otherwise


@dataclass(frozen=True)
class DataOptions:
    paths: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    val_fraction: float = 0.1
    invalid: str = "strict"
    overlong: str = "drop"
    reasoning: str = "drop"
    max_length: int = 2048
    seed: int = 0

    @classmethod
    def from_cfg(cls, data_cfg, seed: int, thinking: bool = False) -> "DataOptions":
        """The options of a `data` config whose knobs passed the recipe's check table; `thinking` (the model's)
        decides `reasoning=auto`."""
        d = dict(data_cfg)
        paths = d.pop("paths") or []
        if isinstance(paths, str):
            paths = [paths]
        weights = d.pop("weights")
        if d.get("reasoning") == "auto":
            d["reasoning"] = "keep" if thinking else "drop"
        opts = cls(paths=tuple(str(p) for p in paths), weights=tuple(float(w) for w in weights) if weights else None,
                   seed=int(seed), **d)
        opts.check()
        return opts

    def check(self) -> None:
        """What the per-knob check table cannot see: the knobs together."""
        if not self.paths:
            raise ToolturnError("no training data: set data.paths=[RUN_DIR,...] (run dirs or HF dataset dirs)")
        if self.weights is not None and len(self.weights) != len(self.paths):
            raise ToolturnError(f"data.weights has {len(self.weights)} entries for {len(self.paths)} data.paths")


@dataclass
class Record:
    id: str
    messages: list[dict]
    tools: list[dict]
    source: int  # index into DataOptions.paths


@dataclass
class Encoded:
    record: Record
    input_ids: list[int]
    assistant_masks: list[int]
    truncated: bool = False


@dataclass
class DataReport:
    """Counts of every filter, written to metrics.json and logged to W&B."""

    sources: list[dict] = field(default_factory=list)
    rows_loaded: int = 0
    duplicates: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    reasoning_dropped: int = 0
    context_turns: int = 0  # assistant turns marked weight 0 in the kept rows: shown to the model, never trained on
    overlong_dropped: int = 0
    overlong_truncated: int = 0
    train_rows: int = 0
    val_rows: int = 0
    train_tokens: int = 0
    train_assistant_tokens: int = 0
    val_tokens: int = 0
    content_sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, float]:
        """Scalar counts for a metrics logger (`data/<name>`)."""
        out = {k: v for k, v in asdict(self).items() if isinstance(v, int)}
        out["invalid"] = sum(self.invalid.values())
        return out


@dataclass
class PreparedData:
    train: list[Encoded]
    val: list[Encoded]
    report: DataReport

    def manifest(self, options: DataOptions) -> dict[str, Any]:
        return {
            "content_sha256": self.report.content_sha256,
            "sources": self.report.sources,
            "options": {k: v for k, v in asdict(options).items() if k != "paths"},
            "train_ids": [e.record.id for e in self.train],
            "val_ids": [e.record.id for e in self.val],
        }


# --------------------------------------------------------------------------------------------------
# Loading


def dataset_dir(path: str | Path) -> Path:
    """The `save_to_disk` dir behind a data path: a run dir's `dataset/`, or the dir itself."""
    p = Path(path).expanduser()
    for d in (RunDir(p).dataset, p):
        if (d / "dataset_info.json").exists() or (d / "dataset_dict.json").exists():
            return d
    what = "does not exist" if not p.exists() else "is not a run dir (no dataset/) or a saved HF dataset"
    raise ToolturnError(f"data path {str(path)!r} {what}")


def _load_dataset(path: str | Path):
    import datasets

    where = dataset_dir(path)
    try:
        d = datasets.load_from_disk(str(where))
    except (OSError, ValueError) as exc:  # a torn or hand-edited dir: missing files, bad JSON, bad Arrow
        again = ("; re-running the toolturn-generate command that made the run exports it again"
                 if where == RunDir(Path(path).expanduser()).dataset else "")
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ToolturnError(f"data path {str(path)!r}: {where} is not a readable dataset ({detail}){again}") from None
    if isinstance(d, datasets.DatasetDict):
        if "train" not in d:
            raise ToolturnError(f"data path {str(path)!r} is a DatasetDict without a 'train' split ({list(d)})")
        d = d["train"]
    if "messages" not in d.column_names:
        raise ToolturnError(f"data path {str(path)!r} has no 'messages' column (columns: {d.column_names})")
    return d


def json_value(value: Any) -> Any:
    """A JSON string's value; anything else (a parsed value, a string that is not JSON) as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _clean_message(message: Any) -> Any:
    """Drop the None-valued keys that Arrow adds for absent fields (as transformers does before rendering)."""
    if not isinstance(message, dict):
        return message
    return {k: v for k, v in message.items() if v is not None}


def load_source(path: str | Path, index: int) -> list[Record]:
    records = []
    for row in _load_dataset(path):
        messages = [_clean_message(m) for m in row["messages"]]
        tools = json_value(row.get("tools")) or []
        rid = row.get("id") or record_digest(messages, tools)[:16]
        records.append(Record(id=str(rid), messages=messages, tools=tools, source=index))
    return records


# --------------------------------------------------------------------------------------------------
# Checks and transforms (pure)


def _tool_name(tool: Any) -> str | None:
    if isinstance(tool, dict):
        fn = tool.get("function", tool)
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return fn["name"]
    return None


def problems(record: Record) -> list[str]:
    """Why a record cannot be rendered faithfully (empty when it can). Reasons are short, stable labels."""
    out: list[str] = []
    if not isinstance(record.tools, list):
        return ["tools is not a list"]
    tool_names = {_tool_name(t) for t in record.tools}
    if None in tool_names:
        out.append("tool without a name")
    pending: list[str | None] = []  # call ids of the latest assistant turn not answered yet
    assistant_turns = 0
    for m in record.messages:
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            out.append(f"unknown role {role!r}")
            continue
        content = m.get("content")
        calls = m.get("tool_calls") or []
        if not (isinstance(content, str) or (content is None and role == "assistant" and calls)):
            out.append(f"{role} content is not a string")
        if "weight" in m and role != "assistant":
            out.append(f"weight on a {role} message")
        elif "weight" in m and (m["weight"] not in (0, 1) or isinstance(m["weight"], bool)):
            out.append("assistant weight is not 0 or 1")
        if role == "assistant":
            assistant_turns += 1
            pending = []
            for call in calls:
                fn = call.get("function", call) if isinstance(call, dict) else None
                name = fn.get("name") if isinstance(fn, dict) else None
                if name not in tool_names:
                    out.append(f"tool call to absent tool {name!r}")
                args = json_value(fn.get("arguments")) if isinstance(fn, dict) else None
                if not isinstance(args, dict):
                    out.append("tool call arguments are not a JSON object")
                pending.append(call.get("id") if isinstance(call, dict) else None)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not pending:
                out.append("tool message with no matching call")
            elif call_id is not None and call_id in pending:
                pending.remove(call_id)
            elif call_id is None or None in pending:
                pending.pop(0)  # positional answer (data without call ids)
            else:
                out.append("tool message with no matching call")
        else:
            pending = []
    if assistant_turns == 0:
        out.append("no assistant turn")
    return sorted(set(out))


def normalize(messages: list[dict]) -> list[dict]:
    """Tool-call arguments as objects (rendered with `tojson`, as `transformers serve` does at inference)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = call.get("function", call)
                fn = {**fn, "arguments": json_value(fn.get("arguments"))}
                calls.append({**call, "function": fn} if "function" in call else fn)
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def apply_reasoning(messages: list[dict], policy: str) -> tuple[list[dict], int]:
    """`keep`: an assistant's reasoning_content becomes a leading `<think>` block (Qwen3 thinking format) inside
    the trained span; `drop`: it is removed. Returns the messages and how many carried reasoning."""
    out, n = [], 0
    for m in messages:
        reasoning = m.get("reasoning_content") if m.get("role") == "assistant" else None
        if reasoning:
            n += 1
            m = {k: v for k, v in m.items() if k != "reasoning_content"}
            if policy == "keep":
                m["content"] = f"<think>\n{reasoning.strip()}\n</think>\n\n{(m.get('content') or '').lstrip()}"
        out.append(m)
    return out, n


def encode(tokenizer, messages: list[dict], tools: list[dict]) -> tuple[list[int], list[int]]:
    out = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    return list(out["input_ids"]), list(out["assistant_masks"])


def fit(tokenizer, record: Record, max_length: int, policy: str) -> tuple[Encoded | None, int]:
    """Encode a record within max_length: as is, or (truncate) cut after the last assistant turn that fits.
    Returns (encoded or None, the shortest length tried)."""
    ids, mask = encode(tokenizer, record.messages, record.tools)
    if len(ids) <= max_length:
        return Encoded(record, ids, mask), len(ids)
    shortest = len(ids)
    if policy == "truncate":
        cuts = [i for i, m in enumerate(record.messages) if m["role"] == "assistant"]
        for cut in reversed(cuts[:-1] if cuts and cuts[-1] == len(record.messages) - 1 else cuts):
            messages = record.messages[: cut + 1]
            ids, mask = encode(tokenizer, messages, record.tools)
            shortest = len(ids)
            if len(ids) <= max_length:
                cut_record = Record(record.id, messages, record.tools, record.source)
                return Encoded(cut_record, ids, mask, truncated=True), shortest
    return None, shortest


def split_ids(ids: list[str], val_fraction: float) -> set[str]:
    """Validation ids: the val_fraction of unique ids with the smallest sha256 (at least one when 2+ ids)."""
    unique = sorted(set(ids), key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    n_val = round(len(unique) * val_fraction)
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    return set(unique[:n_val])


def mix(rows: list[Encoded], weight: float, seed: int, source: int) -> list[Encoded]:
    """Repeat rows floor(weight) times and add a seeded sample of the fractional part."""
    whole, frac = int(math.floor(weight)), weight - math.floor(weight)
    out = rows * whole
    if frac > 0 and rows:
        rng = random.Random(f"{seed}:{source}")
        keep = sorted(rng.sample(range(len(rows)), round(len(rows) * frac)))
        out += [rows[i] for i in keep]
    return out


def content_hash(train: list[Encoded], val: list[Encoded]) -> str:
    h = hashlib.sha256()
    for split, rows in (("train", train), ("val", val)):
        for e in rows:
            h.update(json.dumps([split, e.record.id, e.record.messages, e.record.tools], sort_keys=True,
                                ensure_ascii=False).encode())
            h.update(b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# The pipeline


def _list_bad(bad: list[tuple[str, list[str]]], limit: int = 10) -> str:
    shown = "; ".join(f"{rid}: {', '.join(reasons)}" for rid, reasons in bad[:limit])
    more = f" (and {len(bad) - limit} more)" if len(bad) > limit else ""
    return shown + more


def prepare(options: DataOptions, tokenizer) -> PreparedData:
    report = DataReport()
    seen: set[str] = set()
    records: list[Record] = []
    for index, path in enumerate(options.paths):
        rows = load_source(path, index)
        report.rows_loaded += len(rows)
        report.sources.append({"path": str(Path(path).resolve()), "rows": len(rows),
                               "weight": options.weights[index] if options.weights else 1.0})
        for r in rows:
            if r.id in seen:
                report.duplicates += 1
                continue
            seen.add(r.id)
            records.append(r)

    bad = [(r.id, p) for r in records if (p := problems(r))]
    if bad and options.invalid == "strict":
        raise ToolturnError(f"{len(bad)} of {len(records)} rows cannot be rendered (data.invalid=skip drops and counts "
                            f"them): {_list_bad(bad)}")
    bad_ids = {rid for rid, _ in bad}
    report.invalid = dict(sorted(Counter(reason for _, reasons in bad for reason in reasons).items()))
    records = [r for r in records if r.id not in bad_ids]
    if not records:
        raise ToolturnError(f"no renderable rows in {', '.join(options.paths)} "
                            f"({report.rows_loaded} loaded, invalid: {report.invalid or 'none'})")

    encoded: list[Encoded] = []
    shortest = None
    for r in records:
        messages, n_reasoning = apply_reasoning(normalize(r.messages), options.reasoning)
        if options.reasoning == "drop":
            report.reasoning_dropped += n_reasoning
        e, length = fit(tokenizer, Record(r.id, messages, r.tools, r.source), options.max_length, options.overlong)
        shortest = length if shortest is None else min(shortest, length)
        if e is None:
            report.overlong_dropped += 1
            continue
        if not any(e.assistant_masks):
            report.invalid["no assistant tokens"] = report.invalid.get("no assistant tokens", 0) + 1
            continue
        report.overlong_truncated += e.truncated
        report.context_turns += sum(m["role"] == "assistant" and m.get("weight") == 0 for m in e.record.messages)
        encoded.append(e)
    if not encoded:
        if report.overlong_dropped:
            raise ToolturnError(f"max_length={options.max_length} is smaller than the shortest example ({shortest} "
                                f"tokens{' up to its first assistant turn' if options.overlong == 'truncate' else ''}); "
                                f"raise max_length (data.max_length or model.max_length)")
        raise ToolturnError(f"no renderable rows in {', '.join(options.paths)}: no row has assistant tokens to train on")

    val_ids = split_ids([e.record.id for e in encoded], options.val_fraction)
    val = [e for e in encoded if e.record.id in val_ids]
    train: list[Encoded] = []
    for index in range(len(options.paths)):
        rows = [e for e in encoded if e.record.source == index and e.record.id not in val_ids]
        weight = options.weights[index] if options.weights else 1.0
        mixed = mix(rows, weight, options.seed, index)
        report.sources[index].update(kept=len(rows), train_rows=len(mixed))
        train += mixed
    if not train:
        raise ToolturnError("no training rows left after the validation split; add data or lower data.val_fraction")

    report.train_rows, report.val_rows = len(train), len(val)
    report.train_tokens = sum(len(e.input_ids) for e in train)
    report.train_assistant_tokens = sum(sum(e.assistant_masks) for e in train)
    report.val_tokens = sum(len(e.input_ids) for e in val)
    report.content_sha256 = content_hash(train, val)
    return PreparedData(train=train, val=val, report=report)


def to_hf(rows: list[Encoded]):
    """A tokenized `datasets.Dataset` that TRL's SFTTrainer uses as is (it builds labels from assistant_masks)."""
    import datasets

    return datasets.Dataset.from_dict({
        "input_ids": [e.input_ids for e in rows],
        "assistant_masks": [e.assistant_masks for e in rows],
    })
