"""A thinking model's reasoning through generation: recorded on the assistant messages that had one, covered by
the record digest and the audit, exported to the HF dataset, never shown to the user simulator, the judge or the
model itself, grounding nothing for the structural checks, and kept (a `<think>` block) or dropped by training's
data loader."""

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from conftest import cli
from datasets import load_from_disk
from llm_world import GET_CUSTOMER, REASONING_MARK, World, role_of
from mock_openai import MockServer
from omegaconf import OmegaConf
from toolturn.core.episode import AssistantTurn, EpisodeState, UserTurn, run_episode
from toolturn.core.judges.structural import check_structure
from toolturn.core.rundir import RunDir
from toolturn.core.transcript import render_transcript
from toolturn.generate.audit import audit_run
from toolturn.train.data import DataOptions, DataReport, prepare

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def thinking_run(tmp_path_factory):
    """`toolturn-generate roles=llm` against a scripted thinking assistant: the run dir and every request sent."""
    out = tmp_path_factory.mktemp("reasoning") / "run"
    with MockServer(World(reasoning=True)) as server:
        proc = cli("toolturn-generate", "roles=llm", "llm=external", "llm.endpoints.default.model=mock",
                   f"llm.endpoints.default.base_url={server.base_url}", "policy=report", "num_dialogues=3",
                   "concurrency=2", "logger=none", "progress=false", f"out_dir={out}")
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, requests


def assistant_turns(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["role"] == "assistant"]


def test_reasoning_is_recorded_on_assistant_messages_only(thinking_run):
    run, _ = thinking_run
    records = RunDir(run).records()
    assert len(records) == 3
    for r in records:
        assert all(REASONING_MARK in m["reasoning_content"] for m in assistant_turns(r["messages"]))
        assert not any("reasoning_content" in m for m in r["messages"] if m["role"] != "assistant")
    n = sum(len(assistant_turns(r["messages"])) for r in records)
    stats = json.loads((run / "stats.json").read_text())
    assert stats["reasoning"] == {"dialogues": 3, "assistant_messages": n}
    assert f"{n} assistant messages carry the model's reasoning" in (run / "README.md").read_text()


def test_reasoning_is_covered_by_the_digest_and_the_audit(thinking_run, tmp_path):
    run, _ = thinking_run
    assert audit_run(RunDir(run)).ok
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    part = next((edited / "shards").glob("part-*.jsonl"))
    lines = part.read_text().splitlines()
    record = json.loads(lines[0])
    assistant_turns(record["messages"])[0]["reasoning_content"] = "something else entirely"
    part.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    report = audit_run(RunDir(edited))
    assert report.mismatches == [f"{record['id']}: content digest mismatch (record edited after generation)"]


def test_no_request_carries_the_reasoning(thinking_run):
    """The user simulator and the judge read the dialogue as the customer saw it, and the model gets its own
    earlier turns without their reasoning (some APIs refuse the field)."""
    _, requests = thinking_run
    roles = {role_of(r) for r in requests}
    assert {"user", "assistant", "judge"} <= roles
    # the assistant's own history held reasoning when these were sent: the wire dropped it
    assert any(m["role"] == "assistant" for r in requests if role_of(r) == "assistant" for m in r["messages"])
    leaked = [role_of(r) for r in requests if REASONING_MARK in json.dumps(r)]
    assert leaked == []


def test_export_carries_reasoning_and_training_keeps_or_drops_it(thinking_run):
    pytest.importorskip("transformers")
    from toolturn.train.models import ModelSpec, tokenizer_for

    run, _ = thinking_run
    ds = load_from_disk(str(run / "dataset"))
    exported = [m for row in ds for m in assistant_turns(row["messages"])]
    assert exported and all(REASONING_MARK in m["reasoning_content"] for m in exported)

    tokenizer = tokenizer_for(ModelSpec.from_cfg(OmegaConf.load(CONF / "model" / "tiny_qwen3.yaml")))

    def trained_text(policy: str) -> tuple[list[str], DataReport]:
        data = prepare(DataOptions(paths=(str(run),), reasoning=policy, val_fraction=0.0, max_length=32768), tokenizer)
        spans = [tokenizer.decode([t for t, on in zip(e.input_ids, e.assistant_masks) if on]) for e in data.train]
        return spans, data.report

    kept, report = trained_text("keep")
    assert len(kept) == 3 and all(f"<think>\n{REASONING_MARK}" in span for span in kept)  # inside the loss mask
    assert report.reasoning_dropped == 0
    dropped, report = trained_text("drop")
    assert not any(REASONING_MARK in span or "<think>" in span for span in dropped)
    assert report.reasoning_dropped == len(exported)


class OneQuestion:
    async def respond(self, state: EpisodeState) -> UserTurn:
        return UserTurn(None, True) if state.user_turns else UserTurn("Hello?", False)


class Reply:
    def __init__(self, reasoning: str | None):
        self.reasoning = reasoning

    async def respond(self, state: EpisodeState) -> AssistantTurn:
        return AssistantTurn("Hi, how can I help?", reasoning=self.reasoning)


@pytest.mark.parametrize("reasoning", [None, "", "  \n", "Greet them first."])
def test_a_reply_without_reasoning_gets_no_key(reasoning):
    state = EpisodeState(messages=[{"role": "system", "content": "policy"}], tools=[], start=1)
    asyncio.run(run_episode(state, OneQuestion(), Reply(reasoning), tools=None))
    reply = state.messages[-1]
    assert reply["role"] == "assistant" and reply["content"] == "Hi, how can I help?"
    assert reply.get("reasoning_content", "absent") == ("Greet them first." if reasoning and reasoning.strip()
                                                         else "absent")


def _call(call_id: str, customer: int) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "get_customer", "arguments": {"id": customer}}}


def dialogue(user_says: str) -> list[dict]:
    """The assistant's reasoning names customer 42, then it calls get_customer(42)."""
    return [{"role": "system", "content": "policy"},
            {"role": "user", "content": user_says},
            {"role": "assistant", "content": "Which account is it?", "reasoning_content": "Probably account 42."},
            {"role": "user", "content": "The one I mentioned."},
            {"role": "assistant", "content": "", "tool_calls": [_call("call_1", 42)]},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_customer", "content": '{"email": "a@b.example"}'},
            {"role": "assistant", "content": "The email is a@b.example."}]


def test_reasoning_grounds_no_argument_and_stays_out_of_transcripts():
    problem = check_structure([], dialogue("What is the email on my account?"), 1, [GET_CUSTOMER])
    assert problem is not None and problem.reason == "ungrounded_argument" and "42" in problem.detail
    assert check_structure([], dialogue("What is the email on account 42?"), 1, [GET_CUSTOMER]) is None
    transcript = render_transcript(dialogue("What is the email on my account?"))
    assert "Which account is it?" in transcript and "Probably" not in transcript
