"""How good a run is as training data (`stats.json` "quality", printed by `toolturn-stats`): one function per figure.

- **distinct-n** of a role's text: distinct n-grams / all n-grams over the run, n = 1, 2, 3, on lower-cased word
  tokens (`\\w+`), n-grams never crossing a message; tool calls are not text.
- **distinct templates**: a role's messages with text, and how many stay distinct once numbers, ids and names are
  masked. Masked: every token with a digit (numbers, ids such as ORD-171492, dates), e-mail addresses, and the
  names of the dialogue's own data: the string values of its task facts, tool-call arguments and tool results
  that hold a capital letter or a digit ("Ultra Speaker", "73386 Jennifer Islands"; not "pending").
- **duplicate tasks**: a task that repeats an earlier task of its dialogue: the same template with the same facts
  (what the customer knows: the same order, the same product).
- **contradictions**: a task that makes the same request on the same record as an earlier task of its dialogue
  (the same scenario, its template without the `_declined` suffix, and the same facts) with the opposite
  outcome: one declined the change at the confirmation, the other had it done.
- **task mix**: the share of each task template among all tasks.
- **context turns**: assistant messages marked `"weight": 0` (context, not a training target: a deliberate slip).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Iterator

WORD = re.compile(r"\w+")
DIGITS = re.compile(r"[\w:/-]*\d(?:[\w:/-]|\.(?=\w))*")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
DECLINED = "_declined"


def _texts(records: list[dict], role: str) -> Iterator[str]:
    for r in records:
        for m in r["messages"]:
            if m["role"] == role and isinstance(m.get("content"), str) and m["content"].strip():
                yield m["content"]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams (0.0 without any)."""
    grams: Counter = Counter()
    for text in texts:
        tokens = WORD.findall(text.lower())
        grams.update(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    return round(len(grams) / total, 4) if total else 0.0


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        parsed = _json(value)
        if parsed is not value:
            yield from _strings(parsed)
        else:
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _json(text: str) -> Any:
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def names(record: dict) -> list[str]:
    """The record's own names, longest first: string values of task facts, tool-call arguments and tool results
    that hold a capital letter or a digit."""
    found: set[str] = set()
    for task in record["meta"].get("tasks", []):
        found.update(_strings((task.get("gold") or {}).get("facts", {})))
    for m in record["messages"]:
        if m["role"] == "tool":
            found.update(_strings(m.get("content") or ""))
        for call in m.get("tool_calls") or []:
            found.update(_strings(call.get("function", {}).get("arguments") or {}))
    kept = {s.strip() for s in found if len(s.strip()) >= 2 and re.search(r"[A-Z0-9]", s)}
    return sorted(kept, key=lambda s: (-len(s), s))


def mask(text: str, record_names: list[str]) -> str:
    """`text` with its names, e-mail addresses and every token holding a digit replaced by placeholders."""
    if record_names:
        pattern = "|".join(rf"(?<!\w){re.escape(n)}(?!\w)" for n in record_names)
        text = re.sub(pattern, "<name>", text)
    return DIGITS.sub("<#>", EMAIL.sub("<email>", text))


def distinct_templates(records: list[dict], role: str) -> dict:
    """A role's messages with text, and how many distinct ones remain after masking."""
    masked = []
    for r in records:
        record_names = names(r)
        masked += [mask(text, record_names) for text in _texts([r], role)]
    distinct = len(set(masked))
    return {"messages": len(masked), "distinct": distinct,
            "share": round(distinct / len(masked), 4) if masked else 0.0}


def _tasks(record: dict) -> list[dict]:
    return record["meta"].get("tasks", [])


def _facts(task: dict) -> str:
    return json.dumps((task.get("gold") or {}).get("facts", {}), sort_keys=True, ensure_ascii=False)


def duplicate_tasks(records: list[dict]) -> dict:
    """Tasks repeating an earlier task of their dialogue (same template, same facts)."""
    per = []
    for r in records:
        keys = [(t["template"], _facts(t)) for t in _tasks(r)]
        per.append(len(keys) - len(set(keys)))
    return {"total": sum(per), "dialogues": sum(n > 0 for n in per),
            "per_dialogue": round(sum(per) / len(per), 4) if per else 0.0}


def _outcome(task: dict) -> str | None:
    subtasks = (task.get("gold") or {}).get("subtasks", [])
    if any(st.get("detail", {}).get("decline") for st in subtasks):
        return "declined"
    if any("write" in st.get("detail", {}) for st in subtasks):
        return "done"
    return None


def contradictions(records: list[dict]) -> dict:
    """Tasks whose outcome contradicts an earlier task's on the same request and record (declined vs done)."""
    per = []
    for r in records:
        seen: dict[tuple[str, str], set[str]] = {}
        n = 0
        for t in _tasks(r):
            outcome = _outcome(t)
            if outcome is None:
                continue
            key = (t["template"].removesuffix(DECLINED), _facts(t))
            n += bool(seen.get(key, set()) - {outcome})
            seen.setdefault(key, set()).add(outcome)
        per.append(n)
    return {"total": sum(per), "dialogues": sum(n > 0 for n in per)}


def repeated_questions(record: dict) -> tuple[int, list[dict]]:
    """A visit's questions (read-only tasks reporting labels about records the customer named) and those whose
    every answer an earlier task of the visit gave about the same record (an order's status and total checked
    before a return, asked for again)."""
    told: set[tuple[Any, str]] = set()  # (a record's value, a label reported about it)
    questions, repeated = 0, []
    for task in _tasks(record):
        gold = task["gold"]
        values = {v for k, v in gold["facts"].items() if k != "email address" and isinstance(v, str)}
        labels = {r["label"] for st in gold["subtasks"] for r in st["report"]}
        question = all(st["kind"] == "service" and "write" not in st.get("detail", {})
                       and not st.get("detail", {}).get("decline") for st in gold["subtasks"])
        if question and labels and values:
            questions += 1
            if any(labels <= {label for v, label in told if v == value} for value in values):
                repeated.append(task)
        told |= {(v, label) for v in values for label in labels}
    return questions, repeated


def task_mix(records: list[dict]) -> dict[str, float]:
    """Share of each task template, most frequent first."""
    counts = Counter(t["template"] for r in records for t in _tasks(r))
    total = sum(counts.values())
    return {k: round(v / total, 4) for k, v in counts.most_common()}


def context_turns(records: list[dict]) -> dict:
    """Assistant messages marked weight 0 (context, not targets), their share and the dialogues holding one."""
    per = [sum(m["role"] == "assistant" and m.get("weight") == 0 for m in r["messages"]) for r in records]
    assistant = sum(m["role"] == "assistant" for r in records for m in r["messages"])
    return {"turns": sum(per), "assistant_turns": assistant, "dialogues": sum(n > 0 for n in per),
            "share": round(sum(per) / assistant, 4) if assistant else 0.0}


def quality(records: list[dict]) -> dict:
    roles = ("user", "assistant")
    return {
        "distinct_n": {role: {str(n): distinct_n(list(_texts(records, role)), n) for n in (1, 2, 3)} for role in roles},
        "distinct_templates": {role: distinct_templates(records, role) for role in roles},
        "duplicate_tasks": duplicate_tasks(records),
        "contradictions": contradictions(records),
        "task_mix": task_mix(records),
        "context_turns": context_turns(records),
    }


def format_quality(q: dict) -> list[str]:
    """The lines `toolturn-stats` prints."""
    def dn(role):
        return "/".join(f"{q['distinct_n'][role][n]:.2f}" for n in ("1", "2", "3"))

    def templates(role):
        t = q["distinct_templates"][role]
        return f"{t['distinct']} of {t['messages']} {role} ({t['share']:.0%})"

    c = q["context_turns"]
    return [
        f"distinct-1/2/3: user {dn('user')}, assistant {dn('assistant')}",
        f"distinct messages after masking numbers, ids and names: {templates('assistant')}, {templates('user')}",
        f"duplicate tasks: {q['duplicate_tasks']['total']} in {q['duplicate_tasks']['dialogues']} dialogues; "
        f"contradictions: {q['contradictions']['total']} in {q['contradictions']['dialogues']} dialogues; "
        f"context turns (weight 0): {c['turns']} of {c['assistant_turns']} assistant turns ({c['share']:.1%})",
        "task mix: " + ", ".join(f"{k} {v:.0%}" for k, v in q["task_mix"].items()),
    ]
