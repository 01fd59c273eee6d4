"""A small continuous-batching generator for one causal LM on CPU, with a prefix cache.

On a CPU, a small model's cost per request is two things (notes in docs/endpoints.md, "CPU serving"):

- *prefill*, compute-bound: every turn of an episode re-sends the whole conversation, and every sample of a
  task the same system prompt and tools. The **prefix cache** keeps the key/value tensors of finished requests
  and starts a new request from the longest prefix it shares with one of them, so only the new tokens are
  computed (the tool result and user turn since the last reply, or nothing of a shared system prompt).
- *decode*, bound by reading the weights once per step: one step for 8 sequences costs little more than for 1.
  **Continuous batching** decodes every active request in one forward pass; a request joins the batch after
  its own prefill and leaves it when it ends, without waiting for the others.

The batch's key/value tensors are left-padded to one length ([batch, heads, length, head_dim] per layer);
an attention mask hides the padding and each row keeps its own positions. Sampling is per request
(temperature, top_p, and a torch.Generator seeded with the request's seed). Padding changes the float sums
slightly, so a seeded request repeats exactly only in the same batch company; across companies its
samples are statistically the same, not bit-identical.

The engine runs in one thread (`start`); `submit` may be called from any thread, and each request's `done`
callback is called from the engine thread with a `Generation`.
"""

from __future__ import annotations

import collections
import queue
import random
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

MIN_PREFIX = 16  # a shared prefix shorter than this is computed again (not worth a copy)
SPARE = 64  # columns a batch's key/value buffers hold beyond their length (reallocated when used up)


@dataclass
class Generation:
    tokens: list[int]  # the generated tokens, the stop token excluded
    finish_reason: str  # "stop" | "length" | "error"
    prompt_tokens: int
    cached_tokens: int  # prompt tokens taken from the prefix cache
    error: str | None = None


@dataclass
class GenRequest:
    prompt: list[int]
    max_tokens: int
    done: Callable[[Generation], None]
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    min_tokens: int = 0  # no stop token before this many tokens
    on_token: Callable[[int], None] | None = None  # called with each generated token as it is sampled (streaming)


KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [batch, heads, length, head_dim]


def _kv_bytes(kv: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


class PrefixCache:
    """Finished sequences' key/values by their token ids, least recently used first out above `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: collections.OrderedDict[int, tuple[torch.Tensor, KV]] = collections.OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.reused_tokens = 0
        self._next = 0

    def put(self, ids: list[int], kv: KV) -> int | None:
        """Keep `kv` (the key/values of `ids`); its key, or None when it alone exceeds the bound."""
        size = _kv_bytes(kv)
        if size > self.max_bytes:
            return None
        key = self._next
        self.entries[key] = (torch.tensor(ids, dtype=torch.int64), kv)
        self._next += 1
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, old) = self.entries.popitem(last=False)
            self.bytes -= _kv_bytes(old)
        return key if key in self.entries else None

    def drop(self, key: int | None) -> None:
        if key in self.entries:
            self.bytes -= _kv_bytes(self.entries.pop(key)[1])

    def longest(self, prompt: list[int]) -> tuple[int, KV | None]:
        """The longest cached prefix of `prompt`, at most len(prompt) - 1 tokens (one must be computed to get
        the next token's logits): its length and key/values sliced to it (views, never written to)."""
        best, best_key = 0, None
        target = torch.tensor(prompt, dtype=torch.int64)
        for key, (ids, _) in self.entries.items():
            n = min(len(ids), len(target) - 1)
            if n <= best:
                continue
            same = ids[:n] == target[:n]
            shared = n if bool(same.all()) else int(same.to(torch.int8).argmin())
            if shared > best:
                best, best_key = shared, key
        if best < MIN_PREFIX or best_key is None:
            self.misses += 1
            return 0, None
        self.entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        kv = self.entries[best_key][1]
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in kv]


@dataclass
class _Sequence:
    request: GenRequest
    fed: list[int]  # tokens whose key/values exist (prompt, then generated ones as they are fed)
    generated: list[int]
    generator: torch.Generator
    cached: int
    pad: int = 0  # left padding of this row in the batch
    prompt_key: int | None = None  # the prefix cache's entry for the prompt alone, replaced when the row ends


@dataclass
class _Batch:
    rows: list[_Sequence] = field(default_factory=list)
    kv: KV | None = None
    mask: torch.Tensor | None = None  # [batch, length]: 1 for real tokens
    cache: Cache | None = None  # the decode steps' cache over `kv` (None: to be built after a join or a leave)

    @property
    def length(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]


class BatchEngine:
    """Generate for many requests at once with `model` (a transformers causal LM, eval mode)."""

    def __init__(self, model, stop_ids: set[int], max_batch: int = 8, cache_bytes: int = 1 << 30,
                 max_positions: int | None = None):
        self.model = model
        self.config = model.config
        self.stop_ids = set(stop_ids)
        self.max_batch = max_batch
        self.max_positions = max_positions or getattr(model.config, "max_position_embeddings", None)
        self.prefix = PrefixCache(cache_bytes)
        self.queue: queue.Queue[GenRequest | None] = queue.Queue()
        self.batch = _Batch()
        self.thread: threading.Thread | None = None
        self.steps = self.decoded = self.prefilled = 0

    # ------------------------------------------------------------------ public

    def submit(self, request: GenRequest) -> None:
        self.queue.put(request)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="batch-engine", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        if self.thread is not None:
            self.thread.join()

    def too_long(self, prompt_tokens: int, max_tokens: int) -> str | None:
        """Why a request cannot fit the model's positions, or None."""
        if self.max_positions and prompt_tokens + max_tokens > self.max_positions:
            return (f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                    f"{self.max_positions} positions")
        return None

    def stats(self) -> dict:
        return {"decode_steps": self.steps, "decoded_tokens": self.decoded, "prefilled_tokens": self.prefilled,
                "prefix_hits": self.prefix.hits, "prefix_misses": self.prefix.misses,
                "prefix_reused_tokens": self.prefix.reused_tokens, "prefix_cache_mib": self.prefix.bytes / 2 ** 20,
                "active": len(self.batch.rows)}

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        while True:
            # wait only when idle; otherwise take what arrived and keep decoding
            block = not self.batch.rows
            while len(self.batch.rows) < self.max_batch:
                try:
                    request = self.queue.get(block=block)
                except queue.Empty:
                    break
                if request is None:
                    self._fail_all("the server is stopping")
                    return
                block = False
                self._admit(request)
            if self.batch.rows:
                self._guarded(self._step)

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            with torch.inference_mode():
                work()
        except Exception as e:  # noqa: BLE001 - one bad step fails its requests, never the engine
            self._fail_all(f"{type(e).__name__}: {e}")

    def _fail_all(self, message: str) -> None:
        rows, self.batch = self.batch.rows, _Batch()
        for row in rows:
            row.request.done(Generation(row.generated, "error", len(row.request.prompt), row.cached, message))

    def _admit(self, request: GenRequest) -> None:
        prompt_len = len(request.prompt)
        too_long = self.too_long(prompt_len, request.max_tokens)
        if too_long:
            request.done(Generation([], "error", prompt_len, 0, too_long))
            return
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        row = _Sequence(request, list(request.prompt), [], torch.Generator().manual_seed(seed), 0)
        try:
            with torch.inference_mode():
                kv, logits = self._prefill(row)
                reason = self._take(row, logits)
        except Exception as e:  # noqa: BLE001 - a request that cannot start fails alone
            request.done(Generation([], "error", prompt_len, 0, f"{type(e).__name__}: {e}"))
            return
        if reason is None:
            # the prompt is cached at once, so that requests sharing it (a task's other samples) admitted while
            # this one decodes compute only what differs
            row.prompt_key = self.prefix.put(row.fed, kv)
            self._join(row, kv)
        else:
            self._finish(row, reason, kv)

    def _prefill(self, row: _Sequence) -> tuple[KV, torch.Tensor]:
        """The row's prompt's key/values (from its longest cached prefix on) and its next token's logits [vocab]."""
        prompt = row.request.prompt
        start, past = self.prefix.longest(prompt)
        row.cached = start
        self.prefilled += len(prompt) - start
        ids = torch.tensor([prompt[start:]])
        kv, logits = self._forward(ids, past, torch.arange(start, len(prompt)).unsqueeze(0),
                                   torch.ones(1, len(prompt), dtype=torch.long))
        return kv, logits[0]

    def _forward(self, ids: torch.Tensor, past, positions: torch.Tensor,
                 mask: torch.Tensor) -> tuple[KV, torch.Tensor]:
        """`past`: a prefix's key/values (a prefill), or the batch's cache (a decode step, updated in place)."""
        if isinstance(past, list):
            cache = DynamicCache(ddp_cache_data=past, config=self.config)
        else:
            cache = past if past is not None else DynamicCache(config=self.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=1)
        return [(layer.keys, layer.values) for layer in cache.layers], out.logits[:, -1, :]

    def _sample(self, row: _Sequence, logits: torch.Tensor) -> int:
        r = row.request
        if len(row.generated) < r.min_tokens:
            logits = logits.clone()
            logits[list(self.stop_ids)] = float("-inf")
        if r.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / r.temperature, dim=-1)
        if r.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < r.top_p  # the smallest set whose mass reaches top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _take(self, row: _Sequence, logits: torch.Tensor) -> str | None:
        """Sample the row's next token; the finish reason when that ends the row, else None."""
        token = self._sample(row, logits)
        if token in self.stop_ids:
            return "stop"
        row.generated.append(token)
        if row.request.on_token is not None:
            row.request.on_token(token)
        return "length" if len(row.generated) >= row.request.max_tokens else None

    def _finish(self, row: _Sequence, reason: str, kv: KV) -> None:
        """Answer the row's request and keep its key/values (those of `row.fed`) for later prefixes."""
        self.prefix.drop(row.prompt_key)
        self.prefix.put(row.fed, kv)
        row.request.done(Generation(row.generated, reason, len(row.request.prompt), row.cached))

    # ------------------------------------------------------------------ the batch

    def _join(self, row: _Sequence, kv: KV) -> None:
        b = self.batch
        n = kv[0][0].shape[2]
        if not b.rows:
            b.rows, b.kv, b.mask = [row], kv, torch.ones(1, n, dtype=torch.long)
            row.pad = 0
            return
        if n > b.length:  # widen the batch on the left
            grow = n - b.length
            b.kv = [(_left_pad(k, grow), _left_pad(v, grow)) for k, v in b.kv]
            b.mask = _left_pad(b.mask, grow)
            for r in b.rows:
                r.pad += grow
        row.pad = b.length - n
        b.kv = [(torch.cat([bk, _left_pad(k, row.pad)]), torch.cat([bv, _left_pad(v, row.pad)]))
                for (bk, bv), (k, v) in zip(b.kv, kv)]
        b.mask = torch.cat([b.mask, _left_pad(torch.ones(1, n, dtype=torch.long), row.pad)])
        b.rows.append(row)
        b.cache = None

    def _step(self) -> None:
        """One decode step for every row: feed each row's last token, sample its next."""
        b = self.batch
        ids = torch.tensor([[r.generated[-1]] for r in b.rows])
        positions = torch.tensor([[len(r.fed)] for r in b.rows])
        mask = torch.cat([b.mask, torch.ones(len(b.rows), 1, dtype=torch.long)], dim=1)
        if b.cache is None:
            b.cache = _growing_cache(b.kv)
        b.kv, logits = self._forward(ids, b.cache, positions, mask)
        b.mask = mask
        self.steps += 1
        self.decoded += len(b.rows)
        keep = []
        for i, row in enumerate(b.rows):
            row.fed.append(row.generated[-1])
            reason = self._take(row, logits[i])
            if reason is None:
                keep.append(i)
            else:
                self._finish(row, reason, [(k[i:i + 1, :, row.pad:].clone(), v[i:i + 1, :, row.pad:].clone())
                                           for k, v in b.kv])
        if len(keep) < len(b.rows):
            self._drop_finished(keep)

    def _drop_finished(self, keep: list[int]) -> None:
        b = self.batch
        if not keep:
            self.batch = _Batch()
            return
        rows = [b.rows[i] for i in keep]
        trim = min(r.pad for r in rows)  # columns that are padding in every remaining row
        index = torch.tensor(keep)
        b.kv = [(k.index_select(0, index)[:, :, trim:], v.index_select(0, index)[:, :, trim:]) for k, v in b.kv]
        b.mask = b.mask.index_select(0, index)[:, trim:]
        for r in rows:
            r.pad -= trim
        b.rows = rows
        b.cache = None


class _GrowingLayer(DynamicLayer):
    """A cache layer whose decode steps write their new columns into spare room of a buffer (DynamicLayer
    concatenates, copying the layer's whole key/values at each step: at 8 rows of 1,000 tokens most of a step)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        self._room(keys, values)

    def _room(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        n = keys.shape[2]
        shape = (*keys.shape[:2], n + SPARE, keys.shape[3])
        self.kbuf, self.vbuf = keys.new_empty(shape), values.new_empty(shape)
        self.kbuf[:, :, :n], self.vbuf[:, :, :n] = keys, values
        self.keys, self.values = self.kbuf[:, :, :n], self.vbuf[:, :, :n]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n, m = self.keys.shape[2], self.keys.shape[2] + key_states.shape[2]
        if m > self.kbuf.shape[2]:
            self._room(self.keys, self.values)
        self.kbuf[:, :, n:m], self.vbuf[:, :, n:m] = key_states, value_states
        self.keys, self.values = self.kbuf[:, :, :m], self.vbuf[:, :, :m]
        return self.keys, self.values


def _growing_cache(kv: KV) -> Cache:
    return Cache(layers=[_GrowingLayer(k, v) for k, v in kv])


def _left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    """`t` with `n` zero columns before its sequence axis (dim 2 of key/values, dim 1 of a mask)."""
    if n == 0:
        return t
    dim = 2 if t.dim() == 4 else 1
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)
