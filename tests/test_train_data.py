"""Training data: the assistant-only mask on generated dialogues, tool-call round trip, filters, split, mixing,
and the APIGen-MT / Nemotron converters on hand-written fixtures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from omegaconf import OmegaConf  # noqa: E402

from toolturn.core.chat_template import render  # noqa: E402
from toolturn.core.errors import ToolturnError  # noqa: E402
from toolturn.core.llm import parse_text_tool_calls  # noqa: E402
from toolturn.train import convert  # noqa: E402
from toolturn.train.data import (  # noqa: E402
    DataOptions,
    Record,
    apply_reasoning,
    encode,
    mix,
    normalize,
    prepare,
    problems,
    split_ids,
)
from toolturn.train.models import ModelSpec, tokenizer_for  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
FIXTURES = Path(__file__).parent / "fixtures" / "train"
BIN = Path(sys.executable).parent


def generate(out: Path, *args: str) -> Path:
    exe = BIN / "toolturn-generate" if (BIN / "toolturn-generate").exists() else shutil.which("toolturn-generate")
    proc = subprocess.run([str(exe), "roles=rule", "progress=false", "tools_per_dialogue=4", f"out_dir={out}", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("gen") / "uo", "pipeline=user_oriented", "domain=retail",
                    "num_dialogues=6", "seed=3")


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for(ModelSpec.from_cfg(OmegaConf.load(CONF / "model" / "tiny_qwen3.yaml")))


@pytest.fixture(scope="module")
def records(run_dir) -> list[Record]:
    from toolturn.train.data import load_source

    return load_source(run_dir, 0)


def _segments(messages: list[dict]):
    for m in messages:
        yield m["role"], m


# ----------------------------------------------------------------------------------------------
# Mask and rendering on generated dialogues


def test_mask_covers_assistant_turns_only(records, tokenizer):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for r in records:
        messages = normalize(r.messages)
        ids, mask = encode(tokenizer, messages, r.tools)
        text = tokenizer.decode(ids)
        assert text == render(messages, r.tools)
        # every tool call and tool response is in the text
        for m in messages:
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                assert f'<tool_call>\n{{"name": "{fn["name"]}", "arguments": {json.dumps(fn["arguments"])}}}\n</tool_call>' in text
            if m["role"] == "tool":
                assert f"<tool_response>\n{m['content']}\n</tool_response>" in text
        assert sum(mask) > 0
        targets = [m for m in messages if m["role"] == "assistant" and m.get("weight") != 0]
        ends = [k for i, k in zip(ids, mask) if i == im_end]
        assert sum(ends) == len(targets)  # the <|im_end|> of every target assistant turn is trained on, no other one
        trained = tokenizer.decode([i for i, k in zip(ids, mask) if k])
        untrained = tokenizer.decode([i for i, k in zip(ids, mask) if not k])
        assert "<tool_response>" not in trained and "<|im_start|>" not in trained and "<tools>" not in trained
        for role, m in _segments(messages):
            content = m.get("content") or ""
            if role in ("user", "tool", "system") and len(content) > 20:
                assert content not in trained, role
                assert content in untrained
            if role == "assistant" and content and m.get("weight") != 0:
                assert content in trained
        assert trained == trained_text(targets)


def trained_text(targets: list[dict]) -> str:
    """The assistant turns `targets`, each closed by <|im_end|>\\n, as the template renders them."""
    return "".join(render([m])[len("<|im_start|>assistant\n"):] for m in targets)


def labels(ids: list[int], mask: list[int]) -> list[int]:
    """TRL's SFTTrainer rule for a tokenized row with `assistant_masks`: a token outside the mask is -100."""
    return [i if k else -100 for i, k in zip(ids, mask)]


@pytest.fixture(scope="module")
def slips_run(tmp_path_factory, retail) -> Path:
    """Real user-oriented retail dialogues in which the oracle slips on every report a customer can check, the
    first five that hold a slip, exported as generation exports them (an HF dataset dir)."""
    import asyncio

    import datasets
    from conftest import make_cfg
    from toolturn.generate.dialogue import DialogueFactory
    from toolturn.generate.export import to_arrow_row

    factory = DialogueFactory(retail, make_cfg("pipeline=user_oriented", "domain=retail", "seed=0",
                                               "roles.assistant.slip_rate=1"))
    slipped = []
    for index in range(200):  # bounded: a slip needs a number the customer knows, which not every dialogue has
        record = asyncio.run(factory.make(index)).record
        if record and any(m.get("weight") == 0 for m in record["messages"]):
            slipped.append(record)
            if len(slipped) == 5:
                break
    assert slipped, "no slip in 200 dialogues"
    out = tmp_path_factory.mktemp("gen") / "slips"
    datasets.Dataset.from_list([to_arrow_row(r) for r in slipped]).save_to_disk(str(out))
    return out


def test_a_slipped_turn_is_context_and_its_correction_a_target(slips_run, tokenizer):
    from toolturn.train.data import load_source

    records = load_source(slips_run, 0)
    slipped = records[0]
    messages = normalize(slipped.messages)
    assert problems(slipped) == []
    ids, mask = encode(tokenizer, messages, slipped.tools)
    trained = tokenizer.decode([i for i in labels(ids, mask) if i != -100])
    assistant = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    context = [k for k in assistant if messages[k].get("weight") == 0]
    assert context and all(messages[k]["content"] for k in context)
    for k in context:
        assert messages[k]["content"] in tokenizer.decode(ids)  # shown to the model ...
        assert messages[k]["content"] not in trained  # ... never its target
        complaint = messages[k + 1]
        assert complaint["role"] == "user"
        correction = next(m for m in messages[k + 2:] if m["role"] == "assistant" and m["content"])
        assert "weight" not in correction and correction["content"] in trained
    targets = [messages[k] for k in assistant if k not in context]
    assert trained == trained_text(targets)  # every other assistant turn, and nothing else, carries labels
    report = prepare(DataOptions(paths=(str(slips_run),), val_fraction=0, max_length=32768), tokenizer).report
    assert report.context_turns == sum(m.get("weight") == 0 for r in records for m in r.messages)


def test_rendered_tool_calls_parse_back(records, tokenizer):
    shape = re.compile(r'<tool_call>\n\{"name": "[^"]+", "arguments": \{.*?\}\}\n</tool_call>', re.S)
    n = 0
    for r in records:
        for m in normalize(r.messages):
            if m["role"] != "assistant" or not m.get("tool_calls"):
                continue
            text = render([m])
            body = text[len("<|im_start|>assistant\n"):-len("<|im_end|>\n")]
            assert len(shape.findall(body)) == len(m["tool_calls"])  # BFCL's Qwen handler splits on these
            _, calls = parse_text_tool_calls(body)
            assert [(c["name"], c["arguments"]) for c in calls] == \
                [(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]]
            assert not any("error" in c for c in calls)
            n += len(calls)
    assert n > 0


# ----------------------------------------------------------------------------------------------
# Checks, reasoning, split, mixing


TOOLS = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object", "properties": {}}}}]


def _rec(messages, rid="r1", tools=TOOLS):
    return Record(id=rid, messages=messages, tools=tools, source=0)


def _call(name, cid="c1", args='{"id": 1}'):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


GOOD = [{"role": "user", "content": "where is order 1?"},
        {"role": "assistant", "content": "", "tool_calls": [_call("get_order")]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
        {"role": "assistant", "content": "It has shipped."}]


@pytest.mark.parametrize("messages, reason", [
    (GOOD, None),
    ([GOOD[0], {"role": "assistant", "content": "", "tool_calls": [_call("drop_db")]}], "tool call to absent tool 'drop_db'"),
    ([GOOD[0], {"role": "tool", "content": "{}"}, GOOD[3]], "tool message with no matching call"),
    ([*GOOD[:2], {"role": "tool", "tool_call_id": "zzz", "content": "{}"}, GOOD[3]], "tool message with no matching call"),
    ([GOOD[0], {"role": "narrator", "content": "x"}, GOOD[3]], "unknown role 'narrator'"),
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}, GOOD[3]], "user content is not a string"),
    ([GOOD[0], {"role": "assistant", "content": "", "tool_calls": [_call("get_order", args="{oops")]}],
     "tool call arguments are not a JSON object"),
    ([GOOD[0]], "no assistant turn"),
    ([*GOOD[:3], {**GOOD[3], "weight": 0}], None),
    ([*GOOD[:3], {**GOOD[3], "weight": 0.5}], "assistant weight is not 0 or 1"),
    ([*GOOD[:3], {**GOOD[3], "weight": False}], "assistant weight is not 0 or 1"),
    ([{**GOOD[0], "weight": 0}, *GOOD[1:]], "weight on a user message"),
])
def test_problems(messages, reason):
    found = problems(_rec(messages))
    assert found == ([] if reason is None else [reason]) or reason in found
    if reason is None:
        assert found == []


def test_positional_tool_answers_without_ids_are_valid():
    messages = [GOOD[0], {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_order", "arguments": "{}"}}]},
        {"role": "tool", "content": "{}"}, GOOD[3]]
    assert problems(_rec(messages)) == []


def test_reasoning_keep_and_drop():
    messages = [GOOD[0], {"role": "assistant", "content": "It has shipped.", "reasoning_content": "look it up"}]
    kept, n = apply_reasoning(messages, "keep")
    assert n == 1 and kept[1]["content"] == "<think>\nlook it up\n</think>\n\nIt has shipped."
    assert "reasoning_content" not in kept[1]
    dropped, n = apply_reasoning(messages, "drop")
    assert n == 1 and dropped[1] == {"role": "assistant", "content": "It has shipped."}


def test_split_is_by_dialogue_and_stable():
    ids = [f"d{i}" for i in range(50)]
    val = split_ids(ids + ids, 0.2)  # repeated ids (several rows of one dialogue) land on one side only
    assert len(val) == 10 and val == split_ids(list(reversed(ids)), 0.2)
    assert split_ids(["a", "b"], 0.01) and len(split_ids(["a", "b"], 0.99)) == 1  # never empty on either side
    assert split_ids(["a"], 0.5) == set() and split_ids(ids, 0.0) == set()


def test_mix_weights():
    rows = list(range(10))
    assert mix(rows, 1.0, 0, 0) == rows
    assert mix(rows, 2.0, 0, 0) == rows + rows
    quarter = mix(rows, 0.25, 0, 0)
    assert len(quarter) == 2 and set(quarter) <= set(rows) and quarter == mix(rows, 0.25, 0, 0)
    assert len(mix(rows, 1.5, 0, 0)) == 15


def _save(tmp_path: Path, name: str, rows: list[dict]) -> Path:
    import datasets

    out = tmp_path / name
    datasets.Dataset.from_list([{"id": r["id"], "messages": r["messages"], "tools": json.dumps(r.get("tools", TOOLS))}
                                for r in rows]).save_to_disk(str(out))
    return out


def test_prepare_counts_filters(tmp_path, run_dir, tokenizer):
    bad = _save(tmp_path, "bad", [
        {"id": "ok-1", "messages": GOOD},
        {"id": "bad-1", "messages": [GOOD[0], {"role": "assistant", "content": "", "tool_calls": [_call("nope")]}]},
        {"id": "bad-2", "messages": [GOOD[0], {"role": "tool", "content": "{}"}, GOOD[3]]},
    ])
    with pytest.raises(ToolturnError, match=r"2 of .* rows cannot be rendered.*bad-1: tool call to absent tool 'nope'"):
        prepare(DataOptions(paths=(str(run_dir), str(bad))), tokenizer)
    options = DataOptions(paths=(str(run_dir), str(bad), str(run_dir)), weights=(1.0, 2.0, 1.0), invalid="skip",
                          val_fraction=0.3, max_length=4096)
    data = prepare(options, tokenizer)
    r = data.report
    assert r.rows_loaded == 6 + 3 + 6 and r.duplicates == 6
    assert r.invalid == {"tool call to absent tool 'nope'": 1, "tool message with no matching call": 1}
    assert r.val_rows == 2 and {e.record.id for e in data.val}.isdisjoint(e.record.id for e in data.train)
    assert r.sources[1]["train_rows"] == 2 * r.sources[1]["kept"] and r.sources[2]["kept"] == 0
    assert r.train_rows == len(data.train) == sum(s["train_rows"] for s in r.sources)
    assert r.content_sha256 == prepare(options, tokenizer).report.content_sha256  # deterministic
    reseeded = DataOptions(paths=options.paths, weights=options.weights, invalid="skip", val_fraction=0.3,
                           max_length=4096, seed=1)
    assert prepare(reseeded, tokenizer).report.content_sha256 == r.content_sha256  # whole weights: seed-free


def test_prepare_overlong_drop_and_truncate(run_dir, tokenizer, records):
    lengths = sorted(len(encode(tokenizer, normalize(r.messages), r.tools)[0]) for r in records)
    limit = lengths[len(lengths) // 2]  # about half the dialogues are longer
    dropped = prepare(DataOptions(paths=(str(run_dir),), max_length=limit, overlong="drop", val_fraction=0), tokenizer)
    n_long = sum(n > limit for n in lengths)
    assert dropped.report.overlong_dropped == n_long and dropped.report.train_rows == len(lengths) - n_long
    cut = prepare(DataOptions(paths=(str(run_dir),), max_length=limit, overlong="truncate", val_fraction=0), tokenizer)
    assert cut.report.overlong_truncated + cut.report.overlong_dropped == n_long
    assert cut.report.train_rows > dropped.report.train_rows
    assert any(e.truncated for e in cut.train)
    for e in cut.train:
        assert len(e.input_ids) <= limit
        if e.truncated:  # cut right after an assistant turn: it ends on a trained <|im_end|>\n
            assert e.record.messages[-1]["role"] == "assistant" and e.assistant_masks[-1] == 1


def test_prepare_bad_inputs(tmp_path, run_dir, tokenizer):
    with pytest.raises(ToolturnError, match="is not a run dir"):
        prepare(DataOptions(paths=(str(tmp_path),)), tokenizer)
    with pytest.raises(ToolturnError, match="does not exist"):
        prepare(DataOptions(paths=(str(tmp_path / "missing"),)), tokenizer)
    only_bad = _save(tmp_path, "only_bad", [{"id": "x", "messages": [GOOD[0]]}])
    with pytest.raises(ToolturnError, match="no renderable rows"):
        prepare(DataOptions(paths=(str(only_bad),), invalid="skip"), tokenizer)
    with pytest.raises(ToolturnError, match=r"max_length=64 is smaller than the shortest example \(\d+ tokens"):
        prepare(DataOptions(paths=(str(run_dir),), max_length=64, overlong="truncate"), tokenizer)
    with pytest.raises(ToolturnError, match="data.weights has 1 entries for 2"):
        DataOptions(paths=("a", "b"), weights=(1.0,)).check()


@pytest.mark.parametrize("tear", ["state.json", "arrow", "dataset_info.json"])
def test_a_corrupt_dataset_dir_is_one_error_naming_it(tmp_path, run_dir, tear):
    """A run whose dataset/ was torn (a file gone, an empty Arrow file, bad JSON): one error naming the dir and how
    to make it again, not the datasets library's FileNotFoundError, ArrowInvalid or JSONDecodeError."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    dataset = copy / "dataset"
    if tear == "state.json":
        (dataset / "state.json").unlink()
    elif tear == "arrow":
        next(dataset.glob("*.arrow")).write_bytes(b"")
    else:
        (dataset / tear).write_text("garbage")
    with pytest.raises(ToolturnError, match=rf"data path '{copy}': {dataset} is not a readable dataset \(.+\); "
                                            r"re-running the toolturn-generate command that made the run exports it"):
        prepare(DataOptions(paths=(str(copy),)), tokenizer=None)


# ----------------------------------------------------------------------------------------------
# Converters


def test_apigen_mt_converter(tokenizer):
    rows = convert.read_rows(FIXTURES / "apigen_mt.json")
    records, failed = convert.convert("apigen_mt", rows)
    assert len(records) == 2 and failed == {"ValueError: unknown APIGen-MT turn kind 'narrator'": 1}
    first, parallel = records
    roles = [m["role"] for m in first["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant", "user", "assistant",
                     "tool", "assistant"]
    assert first["tools"][0] == {"type": "function", "function": json.loads(rows[0]["tools"])[0]}
    call = first["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "get_user_details", "arguments": '{"user_id": "yusuf_rossi_9620"}'}
    assert first["messages"][3]["tool_call_id"] == call["id"]
    # two consecutive function calls are one assistant turn; the observations answer them in order
    assert [c["function"]["name"] for c in parallel["messages"][2]["tool_calls"]] == ["get_weather", "get_weather"]
    assert [m.get("tool_call_id") for m in parallel["messages"][3:5]] == ["call_1", "call_2"]
    for r in records:
        rec = Record(r["id"], r["messages"], r["tools"], 0)
        assert problems(rec) == []
        assert not any("weight" in m for m in rec.messages)  # every assistant turn of a converted row is a target
        ids, mask = encode(tokenizer, normalize(rec.messages), rec.tools)
        assert sum(mask) > 0 and "<tool_call>" in tokenizer.decode(ids)


def test_nemotron_converter():
    records, failed = convert.convert("nemotron", convert.read_rows(FIXTURES / "nemotron.jsonl"))
    assert len(records) == 2 and not failed
    thinking, plain = records
    a1, a2 = thinking["messages"][2], thinking["messages"][4]
    assert a1["reasoning_content"].startswith("The user wants a currency conversion") and a1["content"] == ""
    assert a1["tool_calls"][0]["function"]["arguments"] == '{"amount": 250, "from": "USD", "to": "EUR"}'
    assert a2 == {"role": "assistant", "content": "250 USD is about 231.50 EUR.",
                  "reasoning_content": "Report the result."}
    assert thinking["tools"][0]["function"]["name"] == "convert_currency"
    assert thinking["meta"]["reasoning"] == "on" and plain["meta"]["uuid"] == "0b6c1c2e-0002"
    for r in records:
        assert problems(Record(r["id"], r["messages"], r["tools"], 0)) == []
        assert not any("weight" in m for m in r["messages"])
    kept, n = apply_reasoning(normalize(thinking["messages"]), "keep")
    assert n == 2 and "<think>\nReport the result.\n</think>\n\n250 USD" in render(kept, thinking["tools"])


def test_converter_cli_output_trains(tmp_path, tokenizer):
    out = tmp_path / "apigen"
    proc = subprocess.run([sys.executable, "-m", "toolturn.train.convert", "apigen_mt", str(out),
                           "--input", str(FIXTURES / "apigen_mt.json")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(f"done: 2 records in {out}; not converted:")
    data = prepare(DataOptions(paths=(str(out),), val_fraction=0.5), tokenizer)
    assert data.report.train_rows == 1 and data.report.val_rows == 1 and not data.report.invalid


def _convert_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolturn.train.convert", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("text, line", [
    ('{"conversations": []}\n\n{"conversations": [}\n', 3),  # JSON lines: the bad line, counted from 1
    ('[\n {"conversations": []},\n {"conversations": ]\n]\n', 3),  # a JSON list: the line of the error
])
def test_converter_cli_corrupt_input_one_line(tmp_path, text, line):
    src = tmp_path / "rows.json"
    src.write_text(text)
    proc = _convert_cli("apigen_mt", str(tmp_path / "out"), "--input", str(src))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {src}:{line}: not JSON ("), \
        proc.stderr[-1500:]
    assert not (tmp_path / "out").exists()


def test_converter_counts_rows_that_are_not_objects(tmp_path):
    rows = json.loads((FIXTURES / "apigen_mt.json").read_text())
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [*rows, [1, 2], "text", {**rows[0], "tools": "not json"},
                                                      {**rows[0], "conversations": ["hi"]}]) + "\n")
    records, failed = convert.convert("apigen_mt", convert.read_rows(src))
    assert len(records) == 2 and failed == {
        "ValueError: unknown APIGen-MT turn kind 'narrator'": 1, "row is not a JSON object": 2,
        "ValueError: tools is not a JSON list of objects": 1, "TypeError string indices must be integers, not 'str'": 1}
    nemotron = convert.convert("nemotron", [{"messages": ["hi"]}, {"messages": [{"role": "user"}], "tools": 3}])[1]
    assert sum(nemotron.values()) == 2
    proc = _convert_cli("apigen_mt", str(tmp_path / "out"), "--input", str(src))
    assert proc.returncode == 0 and "'row is not a JSON object': 2" in proc.stdout, proc.stderr[-1500:]

