"""Data-quality figures (generate/quality.py): each figure on hand-made records, and all of them pinned on a fixed run.

The pin (tests/fixtures/quality_pin.json) is 20 user-oriented retail dialogues of the rule roles, seed 0. A change
to the rule roles' wording or tasks moves it on purpose: check the new figures, then rewrite the pin with
    .venv/bin/python tests/test_quality.py --update
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import make_cfg
from toolturn.generate.quality import (context_turns, contradictions, distinct_n, distinct_templates,
                                       duplicate_tasks, mask, names, quality, task_mix)

PIN = Path(__file__).parent / "fixtures" / "quality_pin.json"
PINNED_RUN = ("pipeline=user_oriented", "domain=retail", "roles=rule", "seed=0")
PINNED_DIALOGUES = 20


def task(template: str, facts: dict, decline: bool = False, write: bool = False) -> dict:
    detail = {"decline": True} if decline else {"write": 2} if write else {}
    return {"template": template, "gold": {"facts": facts, "subtasks": [{"detail": detail}]}}


def record(messages: list[dict], tasks: list[dict] = ()) -> dict:
    return {"messages": messages, "meta": {"tasks": list(tasks)}}


ORDER = {"email address": "a@example.com", "order number": "ORD-1"}


def test_distinct_n():
    assert distinct_n(["the cat sat", "the cat ran"], 1) == round(4 / 6, 4)
    assert distinct_n(["the cat sat", "the cat ran"], 2) == round(3 / 4, 4)  # no n-gram crosses two messages
    assert distinct_n(["One two", "one TWO"], 2) == 0.5 and distinct_n(["one"], 2) == 0.0


def test_masking_numbers_ids_and_the_dialogues_own_names():
    tool = {"role": "tool", "content": json.dumps([{"name": "Ultra Speaker", "status": "pending", "sku": "ELE-34753"}])}
    r = record([{"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "find", "arguments": {"email": "a@example.com"}}}]}, tool], [task("t", ORDER)])
    assert names(r)[0] == "Ultra Speaker" and "pending" not in names(r)
    assert mask("The Ultra Speaker (ELE-34753) of ORD-1 costs 12.50, dated 2025-07-04T04:54.", names(r)) == \
        "The <name> (<name>) of <name> costs <#>, dated <#>."
    assert mask("Write to b.c@mail.example.org about 3 orders.", []) == "Write to <email> about <#> orders."
    messages = [{"role": "assistant", "content": "The total is 5."}, {"role": "assistant", "content": "The total is 7."},
                {"role": "assistant", "content": "The status is pending."}, {"role": "assistant", "content": ""}]
    assert distinct_templates([record(messages)], "assistant") == {"messages": 3, "distinct": 2, "share": 0.6667}


def test_duplicates_contradictions_mix_and_context():
    other = {**ORDER, "order number": "ORD-2"}
    dialogues = [
        record([], [task("my_orders", {"email address": "a"}), task("my_orders", {"email address": "a"}),
                    task("my_orders", {"email address": "a"})]),  # asked three times: two duplicates
        record([], [task("cancel_order_declined", ORDER, decline=True), task("cancel_order", ORDER, write=True),
                    task("cancel_order", other, write=True)]),  # declined, then done: one contradiction
        record([], [task("cancel_order", ORDER, write=True), task("order_status", ORDER)]),
    ]
    assert duplicate_tasks(dialogues) == {"total": 2, "dialogues": 1, "per_dialogue": round(2 / 3, 4)}
    assert contradictions(dialogues) == {"total": 1, "dialogues": 1}
    assert task_mix(dialogues) == {"my_orders": 0.375, "cancel_order": 0.375, "cancel_order_declined": 0.125,
                                   "order_status": 0.125}
    slip = [{"role": "assistant", "content": "Total 9.", "weight": 0}, {"role": "user", "content": "No."},
            {"role": "assistant", "content": "Total 5."}, {"role": "assistant", "content": "", "tool_calls": []}]
    assert context_turns([record(slip), record(slip[1:])]) == {"turns": 1, "assistant_turns": 5, "dialogues": 1,
                                                               "share": 0.2}


def pinned_run(out_dir: Path):
    from toolturn.core.rundir import RunDir
    from toolturn.generate.run import generate
    return RunDir(generate(make_cfg(*PINNED_RUN, f"num_dialogues={PINNED_DIALOGUES}", f"out_dir={out_dir}")))


def test_quality_pinned_on_a_fixed_run(tmp_path):
    from toolturn.generate.stats import compute_stats, format_table
    stats = compute_stats(pinned_run(tmp_path / "run"))
    got = stats["quality"]
    assert got == json.loads(PIN.read_text()), (
        f"the quality figures moved; if on purpose, rewrite the pin: .venv/bin/python tests/test_quality.py --update\n"
        f"{json.dumps(got, indent=1)}")
    table = format_table(stats)  # what toolturn-stats prints
    assert f"assistant {got['distinct_n']['assistant']['1']:.2f}/" in table and f"task mix: {next(iter(got['task_mix']))} " in table


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        PIN.write_text(json.dumps(quality(pinned_run(Path(tmp) / "run").records()), indent=1) + "\n")
    print(f"wrote {PIN}")
