"""The tool-aware chat template (Qwen3 format, no thinking) used for training and inference alike.

Format (docs/architecture.md §8):

- tools go into the system turn as one JSON object per line inside ``<tools>``, followed by the standard
  Qwen3 tool-calling instructions;
- an assistant tool call is ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` (the newlines
  matter: BFCL's Qwen handler and the hermes parser of vLLM split on them);
- tool results go back as ``<tool_response>\\n...\\n</tool_response>`` blocks inside one user turn per run of
  consecutive tool messages;
- ``{% generation %}`` marks everything the assistant writes, ``<|im_end|>\\n`` included, so that
  ``return_assistant_tokens_mask`` gives an assistant-only loss mask; an assistant message with ``weight: 0``
  (context, not a target: the OpenAI fine-tuning format's per-message weight) is rendered the same but
  left unmarked, so it is never trained on;
- no ``<think>`` blocks: ``reasoning_content`` is not rendered.

For string contents the template is byte-for-byte TRL's ``qwen3_instruct_2507_training.jinja`` (the training
variant of Qwen3-4B-Instruct-2507's template, see tests/test_chat_template.py). Two extensions only affect
inputs that TRL's template renders as an empty string: a content given as a list of OpenAI text parts is
rendered as the concatenation of their texts, and a mapping content (a tool result object) as its JSON.

``RESPONSE_TEMPLATE`` is the inverse: the declarative response template that ``tokenizer.parse_response`` and
``transformers serve`` use to turn a generated ``<tool_call>`` block back into OpenAI ``tool_calls``.
"""

from __future__ import annotations

import json
from typing import Any

TOOL_CHAT_TEMPLATE: str = r"""{#- toolturn tool-aware chat template: Qwen3 (non-thinking) tool format, with generation markers. -#}
{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is mapping -%}
        {{- content | tojson -}}
    {%- elif content is iterable -%}
        {%- for part in content -%}
            {%- if part is mapping and part.text is string -%}
                {{- part.text -}}
            {%- elif part is string -%}
                {{- part -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- macro render_assistant(message, content) -%}
        {{- content }}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
{%- endmacro -%}
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- render_content(messages[0].content) + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + render_content(messages[0].content) + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- set content = render_content(message.content) %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.weight is defined and message.weight == 0 %}
            {{- render_assistant(message, content) }}
        {%- else %}
            {%- generation %}
            {{- render_assistant(message, content) }}
            {%- endgeneration %}
        {%- endif %}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""

# Declarative response template (transformers' `tokenizer.parse_response` format), the parsing
# counterpart of TOOL_CHAT_TEMPLATE. Saved as `response_template` in tokenizer_config.json, it makes
# `transformers serve` return OpenAI `tool_calls` instead of raw `<tool_call>` text for models whose
# model_type has no built-in fallback (SmolLM2 is "llama"). Same shape as transformers' Qwen3 fallback.
RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"\s*<tool_call>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {
            "close_pattern": r"\s*(?:<\|im_end\|>|<\|endoftext\|>)",
            "content": "text",
        },
    },
}


def _normalize_arguments(messages: list[dict]) -> list[dict]:
    """Parse tool-call arguments given as JSON strings into objects (shallow copies; inputs untouched).

    The template writes a string verbatim and an object with `tojson`; parsing first makes
    ``{"a": 1}`` and ``'{"a":1}'`` render identically, which is also what `transformers serve` does
    before it applies the template. A string that is not valid JSON is kept as it is.
    """
    out = []
    for message in messages:
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if calls:
            new_calls = []
            for call in calls:
                fn = call.get("function", call)
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        parsed = json.loads(args)
                    except ValueError:
                        parsed = args
                    fn = {**fn, "arguments": parsed}
                    call = {**call, "function": fn} if "function" in call else fn
                new_calls.append(call)
            message = {**message, "tool_calls": new_calls}
        out.append(message)
    return out


def _compile_fallback(template: str):
    """A jinja2 environment like transformers' one (sandbox, trim/lstrip blocks, non-escaping tojson),
    with a no-op `generation` tag. Used only when transformers is not importable."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_template(template: str, messages: list[dict], tools: list[dict] | None = None,
                    add_generation_prompt: bool = False, **kwargs: Any) -> str:
    """Render any chat template exactly as `tokenizer.apply_chat_template(tokenize=False)` would."""
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]  # as transformers does
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:  # pragma: no cover - transformers is installed wherever the template is used
        render_jinja_template = None
    if render_jinja_template is not None:
        try:
            rendered, _ = render_jinja_template(
                conversations=[messages], tools=tools, chat_template=template,
                add_generation_prompt=add_generation_prompt, **kwargs,
            )
            return rendered[0]
        except TypeError:  # pragma: no cover - signature drift across transformers versions
            pass
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template as compile_template
    except ImportError:  # pragma: no cover
        compile_template = _compile_fallback
    return compile_template(template).render(
        messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt, **kwargs
    )


def render(messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False) -> str:
    """Render a dialogue (OpenAI chat messages + OpenAI function schemas) with TOOL_CHAT_TEMPLATE.

    Tool-call arguments may be objects or JSON strings; both render the same.
    """
    return render_template(TOOL_CHAT_TEMPLATE, _normalize_arguments(list(messages)), tools=tools or None,
                           add_generation_prompt=add_generation_prompt)


def install(tokenizer) -> None:
    """Make `tokenizer` use our template for rendering and our response template for parsing."""
    tokenizer.chat_template = TOOL_CHAT_TEMPLATE
    tokenizer.response_template = RESPONSE_TEMPLATE
