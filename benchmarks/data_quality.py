"""The rule-based data read as training data (issue 15): the figures of README §2, in one command.

    .venv/bin/python benchmarks/data_quality.py [--out runs/data-quality] [--reuse]

Generates 50 user-oriented and 50 task-oriented retail dialogues and 30 of each paradigm for airline and
telecom (seed 0, the rule roles, `toolturn-generate pipeline=P domain=D roles=rule num_dialogues=N seed=0
logger=none`), audits each run (`toolturn-audit`: every tool call replayed) and prints one markdown table per
domain: toolturn-stats' figures (`generate/stats.py`, `generate/quality.py`) beside the checks it does not make,
defined here. `--reuse` measures the runs already under `--out` instead of generating them again.

- **ids a proposal exposes**: proposals (assistant messages asking for a yes, `core/roles/acts.asks_confirmation`)
  that name an identifier from the dialogue's tool results (the value of a key such as `sku`, `id`, `*_id`,
  `*_number`, `*code`, `tag*`; a number only when the text calls it an id) that no earlier user message gave.
  *Internal* ones are database keys, as opposed to numbers printed on what the customer holds
  (`CUSTOMER_FACING`: an order or booking number, a flight or phone number, a bag tag, a return number).
- **mid-sentence capitals**: messages where, after a comma, semicolon, colon or a lower-case word, a word starts
  with a capital although the roles' templates use it ("While I have you, Would you ...", "Now Could you ...");
  the dialogue's own names (`generate/quality.names`: "Classic Plush Bear") are taken out first.
- **double closings**: user messages that thank twice or say goodbye twice.
- **read answers opened as a change**: assistant messages that open with "Done", "All set", "All done" or
  "Finished" when no write was called since the user's last message.
- **questions already answered**: read tasks whose every reported label an earlier task of the same dialogue
  reported about the same record (the same fact value).
- **confirmation asks**: user messages asking whether a change went through or for a value to be read again
  (`core/roles/phrasing.USER_CONFIRM`, `USER_RECHECK`): what `pipeline.user.confirm_prob` makes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from toolturn.core.roles import phrasing as P
from toolturn.core.roles.acts import asks_confirmation
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.quality import names, repeated_questions
from toolturn.generate.stats import compute_stats

RUNS = (("user_oriented", "retail", 50), ("task_oriented", "retail", 50), ("user_oriented", "airline", 30),
        ("task_oriented", "airline", 30), ("user_oriented", "telecom", 30), ("task_oriented", "telecom", 30))
ID_KEY = re.compile(r"^id$|_id$|sku|code$|_number$|^tag")
CUSTOMER_FACING = {"order_number", "new_order_number", "confirmation_code", "flight_number", "phone_number",
                   "tag_number", "rma_number"}
MIDCAP = re.compile(r"(?:[,;:]|(?<=[a-z])) +([A-Z][a-z']+)\b")
WRITE_OPENING = re.compile(r"(Done|All set|All done|Finished)\b")
READ_TOOL = ("get_", "find_", "search_", "list_", "summarize_")


def _template_words() -> set[str]:
    """Every word of the rule roles' templates, lower-cased ("i" and its contractions left out)."""
    words = set()
    for value in vars(P).values():
        if isinstance(value, tuple) and value and all(isinstance(t, str) for t in value):
            words.update(w.lower() for t in value for w in re.findall(r"[A-Za-z']+", t))
    return words - {"i", "i'd", "i'm", "i'll", "i've"}


TEMPLATE_WORDS = _template_words()
CLOSINGS = P.USER_CLOSE + P.USER_CLOSE_AFTER_ACK
CONFIRM_ASKS = P.USER_CONFIRM + P.USER_RECHECK


@dataclass
class Checks:
    proposals: int = 0
    exposing: int = 0  # proposals naming an identifier no user message gave
    exposing_internal: int = 0  # ... a database key among them
    midcap: int = 0
    double_closing: int = 0
    write_opening_on_read: int = 0
    questions: int = 0
    answered_already: int = 0
    confirm_asks: int = 0
    user_messages: int = 0


def _identifiers(value: Any, out: dict[str, str]) -> None:
    """Identifier values in a tool result (parsed JSON), each with the key it stood under."""
    if isinstance(value, dict):
        for key, v in value.items():
            if ID_KEY.search(key) and isinstance(v, (str, int)) and not isinstance(v, bool):
                out[str(v)] = key
            _identifiers(v, out)
    elif isinstance(value, list):
        for v in value:
            _identifiers(v, out)


def _names(text: str, value: str) -> bool:
    if value.isdigit():  # a bare number is an id only where the text says so ("address id 15")
        return re.search(rf"\bid\s*:?\s*{value}\b", text, re.I) is not None
    return re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", text) is not None


def _without(text: str, own_names: list[str]) -> str:
    for name in own_names:
        text = text.replace(name, "x")
    return text


def _tool_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def check_record(record: dict, c: Checks) -> None:
    ids: dict[str, str] = {}
    user_said, wrote = "", False
    own = sorted(names(record), key=len, reverse=True)
    for m in record["messages"]:
        role, text = m["role"], m.get("content") or ""
        if role == "tool":
            _identifiers(_tool_json(text), ids)
            continue
        if role == "system":
            continue
        if text and any(w.lower() in TEMPLATE_WORDS for w in MIDCAP.findall(_without(text, own))):
            c.midcap += 1
        if role == "user":
            wrote = False
            c.user_messages += 1
            c.confirm_asks += any(a in text for a in CONFIRM_ASKS)
            c.double_closing += sum(text.count(t) for t in CLOSINGS) > 1 or text.lower().count("thank") > 1
            user_said += " " + text
            continue
        wrote |= any(not call["function"]["name"].startswith(READ_TOOL) for call in m.get("tool_calls") or [])
        if text and not wrote and WRITE_OPENING.match(text):
            c.write_opening_on_read += 1
        if text and asks_confirmation(text):
            c.proposals += 1
            exposed = [v for v in ids if _names(text, v) and not _names(user_said, v)]
            c.exposing += bool(exposed)
            c.exposing_internal += any(ids[v] not in CUSTOMER_FACING for v in exposed)


def check_visit(record: dict, c: Checks) -> None:
    questions, repeated = repeated_questions(record)
    c.questions += questions
    c.answered_already += len(repeated)


def measure(run_dir: Path) -> tuple[dict, Checks, bool]:
    run = RunDir.existing(run_dir)
    records = run.records()
    checks = Checks()
    for record in records:
        check_record(record, checks)
        check_visit(record, checks)
    return compute_stats(run, records), checks, audit_run(run).ok


def generate(out: Path, pipeline: str, domain: str, n: int) -> Path:
    run_dir = out / f"{pipeline}-{domain}"
    command = [str(Path(sys.executable).with_name("toolturn-generate")), f"pipeline={pipeline}", f"domain={domain}",
               "roles=rule", f"num_dialogues={n}", "seed=0", "logger=none", f"out_dir={run_dir}"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return run_dir


def _share(distinct: dict) -> str:
    return f"{distinct['distinct']} of {distinct['messages']} ({distinct['share']:.0%})"


def _dn(q: dict, role: str) -> str:
    return "/".join(f"{q['distinct_n'][role][n]:.2f}" for n in ("1", "2", "3"))


def rows(stats: dict, c: Checks, audit_ok: bool) -> Iterator[tuple[str, str]]:
    q = stats["quality"]
    top = max(q["task_mix"].items(), key=lambda kv: kv[1])
    yield "dialogues", str(stats["dialogues"])
    yield "user turns per task", f"{stats['user_turns_per_task']:.2f}"
    yield "policy violations", str(sum(stats["policy"]["violations"].values()))
    yield "audit (every call replayed)", "ok" if audit_ok else "MISMATCH"
    yield "distinct-1/2/3 of user text", _dn(q, "user")
    yield "distinct-1/2/3 of assistant text", _dn(q, "assistant")
    yield "distinct assistant messages, masked", _share(q["distinct_templates"]["assistant"])
    yield "distinct user messages, masked", _share(q["distinct_templates"]["user"])
    yield "duplicate tasks", str(q["duplicate_tasks"]["total"])
    yield "contradictions", str(q["contradictions"]["total"])
    yield "questions already answered", f"{c.answered_already} of {c.questions}"
    yield "proposals naming an id the customer did not give (internal)", \
        f"{c.exposing} ({c.exposing_internal}) of {c.proposals}"
    yield "mid-sentence capitals / double closings", f"{c.midcap} / {c.double_closing}"
    yield "read answers opened as a change", str(c.write_opening_on_read)
    yield "most frequent task kind", f"{top[0]} {top[1]:.0%}"
    yield "confirmation asks (user messages)", f"{c.confirm_asks} of {c.user_messages}"
    yield "assistant turns marked context", f"{q['context_turns']['turns']} of {q['context_turns']['assistant_turns']}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/data-quality"))
    parser.add_argument("--reuse", action="store_true", help="measure the runs already under --out")
    args = parser.parse_args(argv)
    table: dict[str, dict[str, list[str]]] = {}
    for pipeline, domain, n in RUNS:
        run_dir = args.out / f"{pipeline}-{domain}" if args.reuse else generate(args.out, pipeline, domain, n)
        column = dict(rows(*measure(run_dir)))
        for label, value in column.items():
            table.setdefault(domain, {}).setdefault(label, []).append(value)
    for domain, figures in table.items():
        print(f"\n{domain} | UO | TO\n---|---|---")
        for label, values in figures.items():
            print(f"{label} | " + " | ".join(values))


if __name__ == "__main__":
    main()
