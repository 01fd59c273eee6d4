"""The verified paraphrase pass (`paraphrase.enabled=true`): an LLM rewrites the rule roles' text of a kept dialogue,
one turn at a time, and a rewrite replaces its turn only if it passes every check below; otherwise the turn keeps
its original text and the reason is counted (`meta.paraphrase`, `stats.json` "paraphrase").

What is rewritten: the text of user and assistant turns (`paraphrase.roles`) after the dialogue's opening (the
system prompt, a continued prefix). Never a tool call, a tool result, an assistant turn that calls tools, or a
context turn (`"weight": 0`: a deliberate slip keeps the exact wrong number the customer then corrects).

Each turn is rewritten with the conversation before it as context, that conversation holding the rewrites already
kept. A rewrite is rejected, in this order, as:

- `malformed` when the reply is a tool call (native, or markup the client reads as one);
- `empty`: no text; `truncated`: cut at `max_tokens`; `oversized`: longer than `max_length_ratio` times the
  original plus 40 characters;
- `malformed`: not one plain message: tool-call or JSON markup, a speaker label at the start of a line (`User:`)
  or an upper-case label (`TRY:`, as SmolLM2 echoed scaffolding),
  talk about the rewriting itself ("Here is the rewritten message"), a code fence, JSON;
- `refusal`: a model's refusal or apology ("as an AI", "unable to assist", "I apologize") in a turn that refused
  nothing (a policy refusal may be rewritten as one);
- `wrong_speaker`: the other side's words the original did not hold: a customer offering help ("how can I help",
  "let me check"), an assistant asking for it ("can you help me", "my order");
- `dropped_fact`: a fact the original states is missing. The facts of a turn are every number it states (by
  value: `1,200` is `1200`), every token holding a digit that is not a number (ids such as ORD-171492, e-mail
  addresses, dates) and every value of the dialogue's own data it states (a string of its task facts, tool-call
  arguments or tool results: "Ultra Speaker", "pending"), each as a whole token (`core/judges/facts.py`);
- `invented_number`, `invented_id`: a number, or an id-like token, the original did not state;
- the dialogue's checks: the dialogue with the rewrite must have no problem the original had not, in the
  structural checks, the execution judge's fact and refusal checks, and the policy checker; the first new one
  names the rejection (`policy_unconfirmed_write`, `missing_fact`, ...).

A reply identical to the original is counted as `unchanged`. A request the endpoint rejects for good (a 4xx, a
reply over the size cap) keeps the original, counted as `llm_<reason>`; an unusable endpoint stops the run.
The requests go through the dialogue's cache scope, so a resumed run replays them from the response cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from omegaconf import DictConfig, OmegaConf
from toolturn.core.endpoints import sampling
from toolturn.core.errors import ToolturnError
from toolturn.core.judges.execution import REFUSAL_CUE
from toolturn.core.judges.facts import mentions, numbers_in
from toolturn.core.llm import ChatResult, LLMError, Sampling
from toolturn.core.prompts import load as load_prompt
from toolturn.core.role_model import RoleModel
from toolturn.core.transcript import render_transcript

ROLES = ("user", "assistant")
SPEAKER = {"user": "customer", "assistant": "customer-service assistant"}
LENGTH_SLACK = 40  # characters a short turn may grow by beyond `max_length_ratio` times its length
SAVED_CHARS = 2000  # of a rejected rewrite, kept in meta.paraphrase for inspection

# One worked exchange per speaker before the real request (small models follow a demonstration more reliably).
SHOTS = {
    "user": ("(none: this is the first message)",
             "Hi, I want to return the Trail Backpack from order ORD-1002 (my email is ann.lee@example.com).",
             "Hello! Could you help me return the Trail Backpack from my order ORD-1002? My email is "
             "ann.lee@example.com."),
    "assistant": ("USER: Hi, what is the status of my order ORD-1002? My email is ann.lee@example.com.",
                  "Found it: its status is shipped; its total comes to 54.20.",
                  "I've found your order: it has shipped, and the total comes to 54.20."),
}

_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d"}
_MARKUP = re.compile(r"<\|?/?(?:tool_call|tool_response|im_start|im_end)|\{\s*\"(?:name|arguments|user_message)\"",
                     re.IGNORECASE)
_LABEL = re.compile(r"^\s*\**(?:user|customer|assistant|agent|system|support|tool)\**\s*:",
                    re.IGNORECASE | re.MULTILINE)
# a prompt's scaffolding echoed back: a line opening with an upper-case label ("TRY:", "SEE:", "NOTE:")
_CAPS_LABEL = re.compile(r"^\s*[A-Z]{2,}(?: [A-Z]{2,})*\s*:", re.MULTILINE)
_COMMENTARY = re.compile(r"\b(?:rewrit\w*|paraphras\w*|rephras\w*|reworded|original message|here is the|"
                         r"here's the|here is a|here's a)\b", re.IGNORECASE)
_MODEL_REFUSAL = re.compile(r"\b(?:as an ai|language model|(?:can(?:no|['\u2019])t|unable to|not able to) (?:help|assist|"
                            r"comply|provide)|i won['\u2019]t (?:help with|do) (?:that|this)|i apologi[sz]e|sorry for "
                            r"any (?:confusion|misunderstanding|inconvenience))", re.IGNORECASE)
# The other side's words: a customer offering help, an assistant asking for it.
_WRONG_SPEAKER = {
    "user": re.compile(r"\b(?:how (?:can|may) i (?:help|assist)|(?:help|assist) you\b|(?:let me|i'll|i will) (?:check|look)"
                       r"|i(?:'m| am) (?:an?|the|your) (?:ai|assistant|agent))", re.IGNORECASE),
    "assistant": re.compile(r"\b(?:(?:can|could) you (?:help|assist) me|i need (?:your )?help with|my (?:email|order|"
                            r"account|booking|line)\b)", re.IGNORECASE),
}
_NUMBER_TOKEN = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_TOKEN_EDGES = "\"'`()[]{}<>,;:!?.$€£#*"


@dataclass(frozen=True)
class ParaphraseSettings:
    """`paraphrase.*` of the generation config, read once."""
    endpoint: str
    roles: tuple[str, ...]
    sampling: Sampling
    prompt: str
    max_length_ratio: float
    context_messages: int

    @classmethod
    def from_config(cls, node: DictConfig | None) -> ParaphraseSettings | None:
        """None when the pass is off. The values were checked by `check_config`."""
        if node is None or not node.enabled:
            return None
        return cls(endpoint=str(node.endpoint), roles=tuple(node.roles), sampling=sampling(node),
                   prompt=str(node.prompt), max_length_ratio=float(node.max_length_ratio),
                   context_messages=int(node.context_messages))


def check_config(cfg: DictConfig) -> str | None:
    """The cross-key checks of `paraphrase.*` (the types and ranges are in generate/config.CHECKS): one line on
    a problem. Returns the endpoint the pass needs started (None when it is off)."""
    node = cfg.paraphrase
    if not node.enabled:
        return None
    roles = OmegaConf.to_container(node.roles) if OmegaConf.is_list(node.roles) else node.roles
    if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles) or len(set(roles)) != len(roles):
        raise ToolturnError(f"paraphrase.roles must be a non-empty list of distinct roles from {list(ROLES)}, "
                            f"got {roles!r}")
    if cfg.roles.user.kind != "rule":
        raise ToolturnError("paraphrase rewrites the rule roles' text (roles=rule); with roles.user.kind=llm the "
                            "text is already an LLM's")
    endpoint = node.endpoint
    if not isinstance(endpoint, str) or endpoint not in cfg.llm.endpoints:
        raise ToolturnError(f"paraphrase.endpoint must name one of llm.endpoints {sorted(cfg.llm.endpoints)}, "
                            f"got {endpoint!r}")
    try:
        load_prompt(str(node.prompt))
    except (OSError, ValueError):
        raise ToolturnError(f"paraphrase.prompt {node.prompt!r} is not a prompt file of core/prompts/") from None
    return endpoint


# ---- the facts of a turn ---------------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value[:1] in "[{":
            try:
                yield from _strings(json.loads(value))
                return
            except ValueError:
                pass
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def dialogue_values(task_facts: list[dict], messages: list[dict]) -> list[str]:
    """The string values of a dialogue's own data, longest first: its task facts, tool-call arguments and tool
    results (JSON read), those with a letter and at least 3 characters (numbers are facts by value)."""
    found: set[str] = set()
    for facts in task_facts:
        found.update(_strings(facts))
    for m in messages:
        if m["role"] == "tool":
            found.update(_strings(m.get("content") or ""))
        for call in m.get("tool_calls") or []:
            found.update(_strings(call.get("function", {}).get("arguments") or {}))
    kept = {s.strip() for s in found if len(s.strip()) >= 3 and re.search(r"[^\W\d_]", s)}
    return sorted(kept, key=lambda s: (-len(s), s))


def id_tokens(text: str) -> set[str]:
    """Tokens holding a digit that are not numbers: ids (ORD-171492), e-mail addresses, dates; lower-cased."""
    out = set()
    for raw in text.split():
        token = raw.strip(_TOKEN_EDGES)
        token = token[:-2] if token.lower().endswith(("'s", "\u2019s")) else token
        token = token.strip(_TOKEN_EDGES)
        if any(c.isdigit() for c in token) and not _NUMBER_TOKEN.fullmatch(token):
            out.add(token.lower())
    return out


@dataclass(frozen=True)
class TurnFacts:
    numbers: frozenset[Decimal]
    ids: frozenset[str]
    values: tuple[str, ...]  # the dialogue's values the turn states

    @classmethod
    def of(cls, text: str, values: list[str]) -> TurnFacts:
        return cls(frozenset(numbers_in(text)), frozenset(id_tokens(text)),
                   tuple(v for v in values if mentions(text, v)))


def fact_problem(original: TurnFacts, rewrite: str) -> tuple[str, str] | None:
    """(reason, detail) when `rewrite` drops a fact of the original or states a number or id it did not."""
    numbers, ids = numbers_in(rewrite), id_tokens(rewrite)
    missing = [format(n, "f") for n in sorted(original.numbers - numbers)]
    missing += sorted(i for i in original.ids if i not in ids)
    missing += [v for v in original.values if not mentions(rewrite, v)]
    if missing:
        return "dropped_fact", ", ".join(missing)[:200]
    if numbers - original.numbers:
        return "invented_number", ", ".join(format(n, "f") for n in sorted(numbers - original.numbers))[:200]
    if ids - original.ids:
        return "invented_id", ", ".join(sorted(ids - original.ids))[:200]
    return None


# ---- one reply ---------------------------------------------------------------------------------------------


def clean(text: str) -> str:
    """The reply without surrounding white space and one pair of quotes around all of it."""
    text = text.strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def reply_problem(role: str, original: str, result: ChatResult, text: str,
                  max_length_ratio: float) -> tuple[str, str] | None:
    """(reason, detail) when the reply is not one sane message of `role` standing in for `original`."""
    if result.tool_calls:
        return "malformed", f"a tool call ({result.tool_calls[0].get('name')})"
    if not text:
        return "empty", "no text"
    if result.finish_reason == "length":
        return "truncated", f"cut at max_tokens after {len(text)} characters"
    limit = int(max_length_ratio * len(original)) + LENGTH_SLACK
    if len(text) > limit:
        return "oversized", f"{len(text)} characters, at most {limit}"
    for pattern, what in ((_MARKUP, "tool-call or JSON markup"), (_LABEL, "a speaker label"),
                          (_CAPS_LABEL, "a label line"), (_COMMENTARY, "talk about the rewriting")):
        found = pattern.search(text)
        if found and not pattern.search(original):
            return "malformed", f"{what}: {found.group().strip()!r}"
    if "```" in text:
        return "malformed", "a code fence"
    if text[:1] in "[{":
        try:
            json.loads(text)
            return "malformed", "JSON"
        except ValueError:
            pass
    found = _MODEL_REFUSAL.search(text)
    # a turn that refuses (the policy's refusals) may be rewritten as one; the model refusing the task may not
    if found and not _MODEL_REFUSAL.search(original) and not REFUSAL_CUE.search(original):
        return "refusal", repr(found.group())
    found = _WRONG_SPEAKER[role].search(text)
    if found and not _WRONG_SPEAKER[role].search(original):
        return "wrong_speaker", repr(found.group())
    return None


# ---- a dialogue --------------------------------------------------------------------------------------------

# The dialogue's checks on a version of its messages: problem key -> the reason it names. A key names the problem
# and where it is, so that a problem the original already had (policy=report) is not a new one.
Verify = Callable[[list[dict]], Awaitable[dict[str, str]]]


def rewritable(messages: list[dict], start: int, roles: tuple[str, ...]) -> list[int]:
    """Indices of the turns the pass rewrites."""
    return [i for i, m in enumerate(messages) if i >= start and m["role"] in roles
            and isinstance(m.get("content"), str) and m["content"].strip()
            and not m.get("tool_calls") and m.get("weight", 1) != 0]


def request_messages(settings: ParaphraseSettings, messages: list[dict], start: int, i: int) -> list[dict]:
    role = messages[i]["role"]
    system = load_prompt(settings.prompt).format(speaker=SPEAKER[role])
    context = render_transcript(messages[max(start, i - settings.context_messages):i]) \
        if settings.context_messages else ""
    shot_context, shot_text, shot_rewrite = SHOTS[role]
    return [{"role": "system", "content": system},
            {"role": "user", "content": _ask(role, shot_context, shot_text)},
            {"role": "assistant", "content": shot_rewrite},
            {"role": "user", "content": _ask(role, context or "(none: this is the first message)",
                                             messages[i]["content"])}]


def _ask(role: str, context: str, text: str) -> str:
    return f"Conversation so far:\n{context}\n\nRewrite this message of the {SPEAKER[role]}:\n{text}"


async def paraphrase_dialogue(model: RoleModel, settings: ParaphraseSettings, messages: list[dict], start: int,
                              values: list[str], verify: Verify) -> tuple[list[dict], list[dict]]:
    """The dialogue with every kept rewrite, and one entry per turn tried: {message, role, outcome, ...} with
    outcome `kept` (and the `original` text), `unchanged`, or the rejection's reason (its `detail` and the
    rejected `rewrite`). `messages` is not modified."""
    out = list(messages)
    baseline = await verify(out)
    turns = []
    for i in rewritable(out, start, settings.roles):
        original = out[i]["content"]
        entry: dict[str, Any] = {"message": i, "role": out[i]["role"]}
        turns.append(entry)
        try:
            result = await model.chat(request_messages(settings, out, start, i))
        except LLMError as exc:
            if exc.fatal:
                raise
            entry.update(outcome=f"llm_{exc.reason}", detail=str(exc)[:200])
            continue
        text = clean(result.content or "")
        if text == original.strip():
            entry["outcome"] = "unchanged"
            continue
        problem = reply_problem(entry["role"], original, result, text, settings.max_length_ratio) \
            or fact_problem(TurnFacts.of(original, values), text)
        candidate = None
        if problem is None:
            candidate = [*out[:i], {**out[i], "content": text}, *out[i + 1:]]
            found = await verify(candidate)
            new = [key for key in found if key not in baseline]
            if new:
                problem = found[new[0]], new[0]
        if problem is not None:
            shown = text or json.dumps(result.tool_calls, ensure_ascii=False)  # a reply that was only a tool call
            entry.update(outcome=problem[0], detail=problem[1], rewrite=shown[:SAVED_CHARS])
            continue
        out = candidate
        entry.update(outcome="kept", original=original)
    return out, turns
