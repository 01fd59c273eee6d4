"""Start from any state: existing conversations are kept verbatim and continued with tool-use tasks."""

import json

from conftest import make_cfg
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import generate

CONVERSATIONS = [
    [{"role": "user", "content": "Hi, what are your opening hours?"},
     {"role": "assistant", "content": "We are open around the clock online."}],
    [{"role": "system", "content": "You are a friendly agent."},
     {"role": "user", "content": "Do you ship to Canada?"},
     {"role": "assistant", "content": "Yes, we ship to Canada."}],
]


def test_prefix_is_kept_verbatim_and_continued(tmp_path):
    prefix = tmp_path / "prefix.jsonl"
    prefix.write_text("\n".join(json.dumps({"messages": c}) for c in CONVERSATIONS) + "\n")
    run = generate(make_cfg("domain=retail", "num_dialogues=6", f"prefix={prefix}", f"out_dir={tmp_path / 'r'}"))
    records = RunDir(run).records()
    assert len(records) == 6
    for r in records:
        meta = r["meta"]["prefix"]
        source = CONVERSATIONS[meta["line"]]
        n = meta["n_messages"]
        kept = r["messages"][:n]
        assert kept[-len(source):] == source
        if source[0]["role"] != "system":
            assert kept[0]["role"] == "system" and n == len(source) + 1
        new = r["messages"][n:]
        assert new[0]["role"] == "user" and any(m.get("tool_calls") for m in new)
    assert audit_run(RunDir(run)).ok
