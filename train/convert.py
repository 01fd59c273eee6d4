"""Baseline datasets of the paper, converted into our record format (`id`, `messages`, `tools`, `meta`).

- APIGen-MT-5k (`Salesforce/APIGen-MT-5k`): ShareGPT-like `conversations` with `from` in
  human / gpt / function_call / observation, plus a `system` prompt and `tools` as a JSON string.
- Nemotron-Post-Training-Dataset-v1, split `tool_calling` (`nvidia/Nemotron-Post-Training-Dataset-v1`):
  OpenAI-style `messages` (tool calls with JSON-string arguments), tools in the `metadata` JSON string;
  assistant reasoning, when inline as `<think>...</think>`, becomes `reasoning_content`.

On a machine with the Hub, convert and save a dataset dir that `toolturn-train data.paths=[...]` reads:

    python -m toolturn.train.convert apigen_mt runs/baselines/apigen-mt          # Salesforce/APIGen-MT-5k
    python -m toolturn.train.convert nemotron runs/baselines/nemotron --limit 20000

`--input FILE.json[l]` converts a local copy instead (what the tests do with hand-written fixtures).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from toolturn.core.errors import ToolturnError
from toolturn.core.rundir import record_digest

from .data import json_value

_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)


def _as_tools(tools: Any) -> list[dict]:
    """A row's tools (a list, or its JSON string; absent: none) in the OpenAI function-calling form
    {"type": "function", "function": {...}}."""
    tools = json_value(tools) or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ValueError("tools is not a JSON list of objects")
    return [t if t.get("type") == "function" and isinstance(t.get("function"), dict) else
            {"type": "function", "function": t} for t in tools]


def _record(prefix: str, messages: list[dict], tools: list[dict], meta: dict) -> dict:
    return {"id": f"{prefix}-{record_digest(messages, tools)[:16]}", "messages": messages, "tools": tools,
            "meta": meta}


# --------------------------------------------------------------------------------------------------
# APIGen-MT


def from_apigen_mt(row: dict) -> dict:
    """One APIGen-MT-5k row. Consecutive function_call turns become one assistant message with several tool calls;
    each observation answers the oldest unanswered call of that message."""
    messages: list[dict] = []
    system = row.get("system")
    if system:
        messages.append({"role": "system", "content": system})
    n_calls = 0
    unanswered: list[dict] = []
    for turn in row["conversations"]:
        kind, value = turn["from"], turn["value"]
        if kind == "human":
            messages.append({"role": "user", "content": value})
        elif kind == "gpt":
            messages.append({"role": "assistant", "content": value})
        elif kind == "function_call":
            call = json_value(value)
            if not isinstance(call, dict) or "name" not in call:
                raise ValueError(f"function_call is not a JSON object with a name: {value[:80]!r}")
            n_calls += 1
            tool_call = {"id": f"call_{n_calls}", "type": "function",
                         "function": {"name": call["name"],
                                      "arguments": json.dumps(call.get("arguments") or {}, ensure_ascii=False)}}
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("tool_calls") and not last["content"]:
                last["tool_calls"].append(tool_call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [tool_call]})
            unanswered.append(tool_call)
        elif kind == "observation":
            call = unanswered.pop(0) if unanswered else None
            content = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            message = {"role": "tool", "content": content}
            if call is not None:
                message.update(tool_call_id=call["id"], name=call["function"]["name"])
            messages.append(message)
        else:
            raise ValueError(f"unknown APIGen-MT turn kind {kind!r}")
    return _record("apigen-mt", messages, _as_tools(row.get("tools")), {"source": "Salesforce/APIGen-MT-5k"})


# --------------------------------------------------------------------------------------------------
# Nemotron


def _nemotron_message(m: dict) -> dict:
    out: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
    if m["role"] == "assistant":
        think = _THINK.match(out["content"])
        if m.get("reasoning_content"):
            out["reasoning_content"] = m["reasoning_content"]
        elif think:
            out["reasoning_content"] = think.group(1).strip()
            out["content"] = out["content"][think.end():]
        calls = []
        for i, call in enumerate(m.get("tool_calls") or []):
            fn = call.get("function", call)
            args = fn.get("arguments")
            calls.append({"id": call.get("id") or f"call_{i}", "type": "function",
                          "function": {"name": fn["name"], "arguments": args if isinstance(args, str)
                                       else json.dumps(args or {}, ensure_ascii=False)}})
        if calls:
            out["tool_calls"] = calls
    elif m["role"] == "tool":
        for key in ("tool_call_id", "name"):
            if m.get(key):
                out[key] = m[key]
    return out


def from_nemotron(row: dict) -> dict:
    """One Nemotron-Post-Training-Dataset-v1 `tool_calling` row."""
    metadata = json_value(row.get("metadata"))
    tools = json_value(row.get("tools")) or (metadata.get("tools") if isinstance(metadata, dict) else None)
    messages = [_nemotron_message(m) for m in row["messages"]]
    meta = {"source": "nvidia/Nemotron-Post-Training-Dataset-v1", "uuid": row.get("uuid"),
            "reasoning": row.get("reasoning"), "category": row.get("category")}
    return _record("nemotron", messages, _as_tools(tools), meta)


# --------------------------------------------------------------------------------------------------
# Loading and saving


CONVERTERS: dict[str, tuple[str, str | None, Callable[[dict], dict]]] = {
    # name: (Hub dataset id, split, converter)
    "apigen_mt": ("Salesforce/APIGen-MT-5k", "train", from_apigen_mt),
    "nemotron": ("nvidia/Nemotron-Post-Training-Dataset-v1", "tool_calling", from_nemotron),
}


def read_rows(path: str | Path) -> list[Any]:
    """A local copy: a JSON list of rows or JSON lines (text that is not JSON is one error naming its line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ToolturnError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    as_list = text.lstrip().startswith("[")
    chunks = [(1, text)] if as_list else [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = []
    for lineno, chunk in chunks:
        try:
            rows.append(json.loads(chunk))
        except json.JSONDecodeError as e:
            raise ToolturnError(f"{path}:{lineno + e.lineno - 1}: not JSON ({e.msg})") from None
    return rows[0] if as_list else rows


def hub_rows(name: str, limit: int | None) -> Iterable[dict]:
    """Rows of a baseline dataset by Hub id (streamed, so --limit reads only what it needs)."""
    import datasets

    dataset_id, split, _ = CONVERTERS[name]
    rows = datasets.load_dataset(dataset_id, split=split, streaming=True)
    return rows.take(limit) if limit else rows


def convert(name: str, rows: Iterable[dict], limit: int | None = None) -> tuple[list[dict], dict[str, int]]:
    """Convert rows; rows that do not convert are counted by reason, never silently dropped."""
    if name not in CONVERTERS:
        raise ToolturnError(f"unknown converter {name!r}; expected one of {', '.join(CONVERTERS)}")
    fn = CONVERTERS[name][2]
    records, failed = [], {}
    for row in rows:
        if limit and len(records) >= limit:
            break
        if not isinstance(row, dict):
            failed["row is not a JSON object"] = failed.get("row is not a JSON object", 0) + 1
            continue
        try:
            records.append(fn(row))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            reason = type(e).__name__ + (f": {e}" if isinstance(e, ValueError) else f" {e}")
            failed[reason[:80]] = failed.get(reason[:80], 0) + 1
    return records, failed


def save(records: list[dict], out_dir: str | Path) -> Path:
    """Save in the layout of a generation run's dataset/ (tools, meta and tool-call arguments as JSON strings)."""
    import datasets

    def row(r: dict) -> dict:
        return {"id": r["id"], "messages": r["messages"], "tools": json.dumps(r["tools"], ensure_ascii=False),
                "meta": json.dumps(r["meta"], ensure_ascii=False)}

    out = Path(out_dir)
    datasets.Dataset.from_list([row(r) for r in records]).save_to_disk(str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolturn.train.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(CONVERTERS))
    parser.add_argument("out_dir")
    parser.add_argument("--input", help="a local JSON / JSON-lines copy instead of the Hub dataset")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        rows = read_rows(args.input) if args.input else hub_rows(args.name, args.limit)
        records, failed = convert(args.name, rows, args.limit)
        if not records:
            raise ToolturnError(f"no row converted ({failed or 'empty input'})")
        save(records, args.out_dir)
    except (ToolturnError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {len(records)} records in {args.out_dir}" + (f"; not converted: {failed}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
