"""`transformers serve`, with one change: a malformed tool call is the model's answer, not a server error.

The managed CPU server (core/servers.py) runs `python -m toolturn.core.serve_transformers serve MODEL ...`
instead of the `transformers` command. transformers parses a generated `<tool_call>` block into OpenAI
`tool_calls` with the model's response template, and raises when the block is not `{"name": ...,
"arguments": ...}` JSON; the server then answers HTTP 500. An evaluation would count the model's own
mistake as an infrastructure failure and leave that sample unscored, which flatters exactly the weak
models. Here a reply whose tool calls do not parse is returned as its raw text, as the server does for a
model without a response template (and as vLLM's hermes parser does), so the caller sees the malformed
block and scores it.
"""

from __future__ import annotations

import sys

from transformers.cli.serving import chat_completion, response, utils

_parse = utils.parse_assistant_message
_normalize = utils._normalize_tool_call


def parse_or_raw(processor, config, generated_ids, input_ids, cleaned_content: str = "", tools=None):
    """`parse_assistant_message`, or `(raw text, None, None)` when the reply does not parse."""
    try:
        return _parse(processor, config, generated_ids, input_ids=input_ids, cleaned_content=cleaned_content,
                      tools=tools)
    except (KeyError, TypeError, ValueError, AttributeError):  # what a malformed block raises in the parser
        return cleaned_content, None, None


def normalize_or_none(value):
    """The streaming path's tool-call normaliser; a malformed call is dropped (its caller skips None)."""
    try:
        return _normalize(value)
    except (KeyError, TypeError, AttributeError):
        return None


def install() -> None:
    # chat_completion and response import the function by name, so each module's binding is replaced
    for module in (utils, chat_completion, response):
        module.parse_assistant_message = parse_or_raw
    utils._normalize_tool_call = normalize_or_none


def main() -> None:
    install()
    from transformers.cli.transformers import main as transformers_main

    sys.argv[0] = "transformers"
    sys.exit(transformers_main())


if __name__ == "__main__":
    main()
