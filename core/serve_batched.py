"""An OpenAI-compatible server on `core/batch_engine.py`: continuous batching and a prefix cache on CPU.

    python -m toolturn.core.serve_batched MODEL_DIR --host 127.0.0.1 --port 8000 [--max-batch 8] [--cache-mib 1024]

The managed endpoint kind `server: batched` (core/servers.py) runs it. It serves the model dir's own chat
template (ours: core/chat_template.py), so prompts are token for token those of `transformers serve`, and:

- POST /v1/chat/completions: messages, tools, temperature, top_p, max_tokens (or max_completion_tokens), seed,
  stop. A reply's `<tool_call>` blocks become OpenAI `tool_calls`; a reply with a block that does not decode is
  returned as its raw text (the caller sees the malformed block and scores it, as with core/serve_transformers.py).
- POST /v1/completions: a raw prompt (BFCL's prompting path); `stop_token_ids` and `skip_special_tokens` are
  accepted.
- GET /v1/models, GET /health (the model is loaded before the port opens, so healthy == ready),
  GET /v1/engine/stats (prefix-cache hits, decode steps, ...).

Both POSTs take `min_tokens` (vLLM's: no stop before that many tokens) and `stream` (server-sent text deltas as
tokens are sampled, the raw reply: tool-call blocks stay text; the pace probe of evaluate/pacing.py times them).
Not supported, each a 400 naming it: n > 1, logprobs. `usage.prompt_tokens_details.cached_tokens` says how much
of a prompt came from the prefix cache.
"""


import argparse
import asyncio
import os
import time
import uuid
from typing import AsyncIterator

import orjson

from toolturn.core.batch_engine import BatchEngine, GenRequest, Generation
from toolturn.core.llm import parse_text_tool_calls
from toolturn.core.servers import BATCHED_MAX_BATCH

UNSUPPORTED = {"n": lambda v: v not in (None, 1), "logprobs": bool, "top_logprobs": bool}


class RequestError(ValueError):
    """A request this server cannot answer: HTTP 400 with this message."""


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"{key} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def sampling(body: dict, max_new: int) -> dict:
    """The engine's sampling arguments from an OpenAI request body (validated)."""
    for key, bad in UNSUPPORTED.items():
        if bad(body.get(key)):
            raise RequestError(f"{key}={body.get(key)!r} is not supported by this server")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestError(f"{key} must be a whole number >= 1, got {max_tokens!r}")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(f"seed must be an integer, got {seed!r}")
    min_tokens = body.get("min_tokens") or 0
    if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 0:
        raise RequestError(f"min_tokens must be a whole number >= 0, got {min_tokens!r}")
    return {"max_tokens": max_tokens or max_new, "temperature": _number(body, "temperature", 1.0, 0, 10),
            "top_p": _number(body, "top_p", 1.0, 0, 1), "seed": None if seed is None else seed % (1 << 63),
            "min_tokens": min_tokens}


def stop_strings(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError(f"stop must be a string or a list of strings, got {stop!r}")
    return stops


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to the first stop string (generation is not interrupted by one: it is cut afterwards)."""
    cuts = [i for s in stops if (i := text.find(s)) >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def assistant_message(text: str) -> tuple[dict, bool]:
    """The OpenAI message for a reply, and whether it holds tool calls."""
    content, calls = parse_text_tool_calls(text)
    if not calls or any("error" in c for c in calls):
        return {"role": "assistant", "content": text}, False  # a malformed block: the raw text, scored by the caller
    tool_calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                   "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                                else orjson.dumps(c["arguments"]).decode()}} for c in calls]
    return {"role": "assistant", "content": content, "tool_calls": tool_calls}, True


def usage(g: Generation) -> dict:
    return {"prompt_tokens": g.prompt_tokens, "completion_tokens": len(g.tokens),
            "total_tokens": g.prompt_tokens + len(g.tokens), "prompt_tokens_details": {"cached_tokens": g.cached_tokens}}


class Server:
    def __init__(self, model_dir: str, max_batch: int, cache_mib: int, max_new_tokens: int, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        stop = {self.tokenizer.eos_token_id} | _ids(getattr(model.generation_config, "eos_token_id", None))
        self.engine = BatchEngine(model, {s for s in stop if s is not None}, max_batch=max_batch,
                                  cache_bytes=cache_mib << 20)
        self.max_new_tokens = max_new_tokens
        self.engine.start()

    def check_length(self, prompt: list[int], args: dict) -> None:
        """A prompt too long for the model is the client's mistake: a 400 (the engine would fail it too)."""
        too_long = self.engine.too_long(len(prompt), args["max_tokens"])
        if too_long:
            raise RequestError(too_long)

    async def generate(self, prompt: list[int], args: dict) -> Generation:
        self.check_length(prompt, args)
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(g: Generation) -> None:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(g))

        self.engine.submit(GenRequest(prompt, done=done, **args))
        g = await future
        if g.error:
            raise RuntimeError(g.error)
        return g

    def check_model(self, body: dict) -> None:
        model = body.get("model")
        if model not in (None, self.name):
            raise LookupError(f"model {model!r} is not served here; this server serves {self.name!r}")

    def chat_prompt(self, body: dict) -> list[int]:
        self.check_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list")
        try:
            return list(self.tokenizer.apply_chat_template(messages, tools=body.get("tools") or None,
                                                           add_generation_prompt=True, tokenize=True,
                                                           return_dict=False))
        except Exception as e:  # noqa: BLE001 - the template rejects what it cannot render
            raise RequestError(f"messages cannot be rendered by the chat template: {e}") from e

    def completion_prompt(self, body: dict) -> list[int]:
        self.check_model(body)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise RequestError("prompt must be a non-empty string")
        extra = body.get("stop_token_ids") or []
        if not isinstance(extra, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in extra):
            raise RequestError(f"stop_token_ids must be a list of integers, got {extra!r}")
        return self.tokenizer(prompt, add_special_tokens=False).input_ids

    def text(self, body: dict, tokens: list[int]) -> str:
        """The reply's text: up to a `stop_token_ids` token, special tokens skipped unless asked otherwise."""
        for t in body.get("stop_token_ids") or []:
            if t in tokens:
                tokens = tokens[:tokens.index(t)]
        return self.tokenizer.decode(tokens, skip_special_tokens=bool(body.get("skip_special_tokens", True)))

    async def chat(self, body: dict) -> dict:
        prompt = self.chat_prompt(body)
        args, stops = sampling(body, self.max_new_tokens), stop_strings(body)
        g = await self.generate(prompt, args)
        text, stopped = cut_at_stop(self.text(body, g.tokens), stops)
        message, has_calls = assistant_message(text)
        finish = "tool_calls" if has_calls else "stop" if stopped else g.finish_reason
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage(g)}

    async def completion(self, body: dict) -> dict:
        prompt = self.completion_prompt(body)
        args, stops = sampling(body, self.max_new_tokens), stop_strings(body)
        g = await self.generate(prompt, args)
        text, stopped = cut_at_stop(self.text(body, g.tokens), stops)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.name, "choices": [{"index": 0, "text": text,
                                                 "finish_reason": "stop" if stopped else g.finish_reason}],
                "usage": usage(g)}

    def stream(self, body: dict, chat: bool) -> AsyncIterator[bytes]:
        """A streamed reply (server-sent events) of text deltas as tokens are sampled; the request is checked
        before the first byte, so a bad one is still a 400."""
        prompt = self.chat_prompt(body) if chat else self.completion_prompt(body)
        args, stops = sampling(body, self.max_new_tokens), stop_strings(body)
        self.check_length(prompt, args)
        ident, created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())

        def event(delta: str | None, finish: str | None, g: Generation | None = None) -> bytes:
            choice = ({"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": finish} if chat
                      else {"index": 0, "text": delta or "", "finish_reason": finish})
            chunk = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": created, "model": self.name, "choices": [choice]}
            if g is not None:
                chunk["usage"] = usage(g)
            return b"data: " + orjson.dumps(chunk) + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            arrivals: asyncio.Queue = asyncio.Queue()
            put = lambda item: loop.call_soon_threadsafe(arrivals.put_nowait, item)  # noqa: E731
            self.engine.submit(GenRequest(prompt, done=put, on_token=put, **args))
            tokens, sent, stopped = [], "", False
            while not isinstance(item := await arrivals.get(), Generation):
                tokens.append(item)
                text = self.text(body, tokens)
                if stopped or text.endswith("\ufffd"):  # cut at a stop string, or inside a character
                    continue
                text, stopped = cut_at_stop(text, stops)
                if text[len(sent):]:
                    yield event(text[len(sent):], None)
                    sent = text
            yield event(None, "error" if item.error else "stop" if stopped else item.finish_reason, item)
            yield b"data: [DONE]\n\n"

        return events()


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return set(value) if isinstance(value, (list, tuple, set)) else {value}


def app(server: Server):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    api = FastAPI()

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    async def answer(request: Request, handler, chat: bool):
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as e:
            return error(400, f"the request body is not JSON: {e}", "invalid_request_error")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object", "invalid_request_error")
        try:
            if body.get("stream") not in (None, False, True):
                raise RequestError(f"stream must be true or false, got {body['stream']!r}")
            if body.get("stream"):
                return StreamingResponse(server.stream(body, chat), media_type="text/event-stream")
            return JSONResponse(await handler(body))
        except RequestError as e:
            return error(400, str(e), "invalid_request_error")
        except LookupError as e:
            return error(404, str(e), "model_not_found")
        except RuntimeError as e:
            return error(500, str(e), "server_error")

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        return await answer(request, server.chat, True)

    @api.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, server.completion, False)

    @api.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": server.name, "object": "model", "owned_by": "toolturn"}]}

    @api.get("/health")
    async def health():
        return {"status": "ok"}

    @api.get("/v1/engine/stats")
    async def stats():
        return server.engine.stats()

    return api


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=BATCHED_MAX_BATCH, help="requests decoded together")
    p.add_argument("--cache-mib", type=int, default=1024, help="the prefix cache's size bound")
    p.add_argument("--max-new-tokens", type=int, default=512, help="a request without max_tokens gets this")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: every core it may run on); on a machine other work keeps busy, fewer "
                        "(see docs)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16 prefills about 1.6x faster on a CPU with AVX512-BF16, with bf16 rounding")
    args = p.parse_args(argv)
    import torch
    import uvicorn

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    server = Server(args.model, args.max_batch, args.cache_mib, args.max_new_tokens, args.dtype)
    uvicorn.run(app(server), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
