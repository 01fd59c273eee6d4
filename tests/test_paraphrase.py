"""The verified paraphrase pass (generate/paraphrase.py) against a scripted OpenAI-compatible server: which rewrites
are kept and which rejected with what reason, record texts and counts exactly; tool calls and results untouched; a
resume replays from the response cache; a dead endpoint and config mistakes are one line."""

import json
import re
from collections import Counter

import pytest
from conftest import cli, make_cfg
from mock_openai import MockServer, completion, hold_port
from toolturn.core.errors import ToolturnError
from toolturn.core.judges.execution import REFUSAL_CUE
from toolturn.core.llm import ChatResult
from toolturn.core.roles.acts import asks_confirmation
from toolturn.core.rundir import RunDir
from toolturn.generate import config
from toolturn.generate.audit import audit_run
from toolturn.generate.paraphrase import TurnFacts, clean, fact_problem, id_tokens, reply_problem
from toolturn.generate.run import generate
from toolturn.generate.stats import compute_stats

ASK = re.compile(r"Rewrite this message of the ([^:]+):\n(.*)\Z", re.S)


def polite(text):
    return "Well, " + text[0].lower() + text[1:]


def drop_digit_token(text):
    return re.sub(r"\s*\S*\d\S*", "", text, count=1)


# transform -> (reply to the original text, the outcome the pass must record)
TRANSFORMS = {
    "polite": (lambda t: completion(polite(t)), "kept"),
    "drop_fact": (lambda t: completion(drop_digit_token(t)), "dropped_fact"),
    "invent_number": (lambda t: completion(t + " That makes 4242 in all."), "invented_number"),
    "invent_id": (lambda t: completion(t + " Your reference is REF-99X."), "invented_id"),
    "empty": (lambda t: completion("   "), "empty"),
    "oversized": (lambda t: completion(" ".join([t] * 10)), "oversized"),
    "tool_markup": (lambda t: completion('<tool_call>\n{"name": "cancel_pending_order", "arguments": {}}\n</tool_call>'),
                    "malformed"),
    "label": (lambda t: completion("Customer: " + t), "malformed"),
    "commentary": (lambda t: completion("Here is the rewritten message: " + t), "malformed"),
    "refusal": (lambda t: completion("I'm sorry, but as an AI language model I cannot help with that."), "refusal"),
    "wrong_speaker": (lambda t: completion("Sure, I can help you with that. " + t), "wrong_speaker"),
    "truncated": (lambda t: completion(polite(t), finish_reason="length"), "truncated"),
    "same": (lambda t: completion(t), "unchanged"),
}
CYCLE = list(TRANSFORMS)


class Rewriter:
    """Answers paraphrase requests: a turn that asks the customer's leave for a write loses its question (the policy
    checker must reject that); every other turn gets the next transform of CYCLE. `log` holds (original, transform)."""

    def __init__(self):
        self.log: list[tuple[str, str]] = []
        self.k = 0
        self.unasked = False

    def __call__(self, request):
        speaker, original = ASK.search(request["messages"][-1]["content"]).groups()
        if speaker.endswith("assistant") and asks_confirmation(original) and not self.unasked:
            self.unasked = True
            self.log.append((original, "unasked"))
            return completion(re.sub(r"[^.!?]*\?", "", original).strip() or "Okay.")
        name = CYCLE[self.k % len(CYCLE)]
        self.k += 1
        if name == "drop_fact" and not re.search(r"\d", original):
            name = "same"
        if name == "refusal" and REFUSAL_CUE.search(original):  # a policy refusal may be rewritten as one
            name = "polite"
        if name == "wrong_speaker" and speaker.endswith("assistant"):  # the customer's words are the wrong ones
            return self.answer(original, "wrong_speaker", completion("Could you help me? " + original))
        return self.answer(original, name, TRANSFORMS[name][0](original))

    def answer(self, original, name, reply):
        self.log.append((original, name))
        return reply


def expected(name):
    return "policy_unconfirmed_write" if name == "unasked" else TRANSFORMS[name][1]


def cfg(url, out, *extra, n=6):
    return make_cfg("domain=retail", "llm=external", f"llm.endpoints.default.base_url={url}",
                    "llm.endpoints.default.model=mock", "llm.endpoints.default.timeout_s=5",
                    "llm.endpoints.default.max_retries=0", f"num_dialogues={n}", "concurrency=1", f"out_dir={out}",
                    *extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 6 rule-role dialogues without and with the pass."""
    tmp = tmp_path_factory.mktemp("paraphrase")
    plain = generate(cfg("http://127.0.0.1:9/v1", tmp / "plain"))  # no endpoint is started without the pass
    rewriter = Rewriter()
    with MockServer(rewriter) as server:
        run = generate(cfg(server.base_url, tmp / "run", "paraphrase.enabled=true"))
        requests = len(server.requests)
    return RunDir(plain).records(), RunDir(run), rewriter, requests


def test_rewrites_are_kept_or_rejected_with_their_reason(runs):
    plain, run, rewriter, requests = runs
    records = run.records()
    turns = [(r, t) for r in records for t in r["meta"]["paraphrase"]["turns"]]
    assert len(turns) == len(rewriter.log) == requests
    outcomes = Counter()
    for (record, turn), (original, name) in zip(turns, rewriter.log):
        before = next(p for p in plain if p["id"] == record["id"])["messages"][turn["message"]]
        text = record["messages"][turn["message"]]["content"]
        assert before["content"] == original and turn["role"] == before["role"]
        assert turn["outcome"] == expected(name), (name, original, turn)
        outcomes[turn["role"], turn["outcome"]] += 1
        if turn["outcome"] == "kept":
            assert turn["original"] == original and text == polite(original)
        else:
            assert text == original and "original" not in turn
        if turn["outcome"] not in ("kept", "unchanged"):
            assert turn["detail"] and "rewrite" in turn
    # every outcome occurred, and the details name what is wrong
    assert {o for _, o in outcomes} == {expected(n) for n in [*TRANSFORMS, "unasked"]}
    details = {t["outcome"]: t.get("detail") for _, t in turns}
    assert "4242" in details["invented_number"] and details["invented_id"] == "ref-99x"
    assert details["policy_unconfirmed_write"].startswith("policy_unconfirmed_write:")
    # stats.json counts exactly what the records say, per role
    stats = json.loads(run.stats.read_text())["paraphrase"]
    for role in ("user", "assistant"):
        mine = {o: n for (r, o), n in outcomes.items() if r == role}
        tried, kept, unchanged = sum(mine.values()), mine.pop("kept", 0), mine.pop("unchanged", 0)
        assert stats[role] == {"turns": tried, "kept": kept, "unchanged": unchanged, "rejected": stats[role]["rejected"],
                               "acceptance": round(kept / tried, 4)}
        assert stats[role]["rejected"] == mine
    assert compute_stats(run)["paraphrase"] == stats
    assert audit_run(run).ok


def test_tool_calls_results_and_context_turns_are_never_rewritten(runs):
    plain, run, rewriter, _ = runs
    records = run.records()
    assert [r["id"] for r in records] == [p["id"] for p in plain]
    weighted = 0
    for before, after in zip(plain, records):
        tried = {t["message"] for t in after["meta"]["paraphrase"]["turns"]}
        for i, (m, n) in enumerate(zip(before["messages"], after["messages"], strict=True)):
            text_turn = m["role"] in ("user", "assistant") and bool(m["content"]) and not m.get("tool_calls")
            assert (i in tried) == (text_turn and m.get("weight", 1) == 1)
            if i in tried:
                assert {k: v for k, v in m.items() if k != "content"} == {k: v for k, v in n.items() if k != "content"}
            else:
                assert m == n  # system prompt, tool calls, tool results, context turns: byte for byte
            weighted += m.get("weight", 1) == 0
        assert after["meta"]["tasks"] == before["meta"]["tasks"] and after["meta"]["counts"] == before["meta"]["counts"]
    assert weighted > 0  # the run has context turns, and none of them was sent


def test_a_resume_pays_nothing_and_duplicates_nothing(runs, tmp_path):
    """The last record is torn away (a crash): the resume makes it again from the response cache alone."""
    _, run, _, _ = runs
    out = tmp_path / "run"
    import shutil
    shutil.copytree(run.root, out)
    part = next((out / "shards").glob("part-*.jsonl"))
    lines = part.read_text().splitlines(True)
    part.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    with MockServer(Rewriter()) as server:
        generate(cfg(server.base_url, out, "paraphrase.enabled=true"))
        assert server.requests == []

    def texts(records):
        return [(r["id"], r["messages"], r["meta"]["paraphrase"]) for r in records]
    assert texts(RunDir(out).records()) == texts(run.records())
    assert audit_run(RunDir(out)).ok


def test_a_resume_must_agree_on_the_pass(runs, tmp_path):
    _, run, _, _ = runs
    with pytest.raises(ToolturnError, match="different paraphrase"):
        generate(cfg("http://127.0.0.1:9/v1", run.root, "paraphrase.enabled=true", "paraphrase.temperature=0.1"))
    with pytest.raises(ToolturnError, match="different paraphrase"):
        generate(cfg("http://127.0.0.1:9/v1", run.root))


def test_a_dead_endpoint_stops_the_run_with_one_line(tmp_path):
    held = hold_port()  # bound, never listening: every connection is refused
    try:
        url = f"http://127.0.0.1:{held.getsockname()[1]}/v1"
        with pytest.raises(ToolturnError) as err:
            generate(cfg(url, tmp_path / "run", "paraphrase.enabled=true", n=2))
    finally:
        held.close()
    message = str(err.value)
    assert "\n" not in message and "127.0.0.1" in message and "re-running the same command resumes" in message
    assert RunDir(tmp_path / "run").records() == []  # nothing half-paraphrased was kept


@pytest.mark.parametrize("overrides, message", [
    (["paraphrase.roles=[user,tool]"], "paraphrase.roles must be a non-empty list of distinct roles from "
                                       "['user', 'assistant'], got ['user', 'tool']"),
    (["paraphrase.roles=[]"], "paraphrase.roles must be a non-empty list"),
    (["paraphrase.roles=user"], "paraphrase.roles must be a non-empty list"),
    (["paraphrase.endpoint=big"], "paraphrase.endpoint must name one of llm.endpoints ['default'], got 'big'"),
    (["paraphrase.prompt=nope"], "paraphrase.prompt 'nope' is not a prompt file of core/prompts/"),
    (["roles=llm"], "paraphrase rewrites the rule roles' text"),
    (["paraphrase.temperature=3"], "paraphrase.temperature must be a number in [0, 2], got 3"),
    (["paraphrase.max_length_ratio=0"], "paraphrase.max_length_ratio must be a positive number, got 0"),
    (["paraphrase.enabled=yes"], "paraphrase.enabled must be true or false, got 'yes'"),
    (["llm=external"], "llm.endpoints.default.model"),  # the pass's endpoint must be complete like a role's
])
def test_config_mistakes_are_one_line(overrides, message):
    with pytest.raises(ToolturnError) as err:
        config.validate(make_cfg("paraphrase.enabled=true", *overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_disabled_pass_checks_nothing_and_starts_nothing():
    assert config.endpoint_names(make_cfg("paraphrase.endpoint=big", "paraphrase.roles=[tool]")) == []


def test_a_typo_on_the_command_line_is_one_line(tmp_path):
    done = cli("toolturn-generate", "paraphrase.enabeld=true", f"out_dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown config key 'paraphrase.enabeld' (did you mean 'paraphrase.enabled'?)"


@pytest.mark.parametrize("original, rewrite, problem", [
    ("The total is 1,200.50 for ORD-17.", "ORD-17 comes to 1200.5 in total.", None),  # numbers by value
    ("The total is 12.", "The total is 120.", ("dropped_fact", "12")),
    ("Order ORD-17 is pending.", "Order ORD-17 is being prepared.", ("dropped_fact", "pending")),
    ("Order ORD-17 is pending.", "Order ORD-17's status: pending.", None),
    ("Email me at a.b9@example.com.", "Please email a.b9@example.com", None),
    ("Order ORD-17 is pending.", "Order ORD-17 (2 items) is pending.", ("invented_number", "2")),
    ("Order ORD-17 is pending.", "Order ORD-17 and ORD-18 are pending.", ("invented_id", "ord-18")),
])
def test_the_facts_of_a_turn(original, rewrite, problem):
    assert fact_problem(TurnFacts.of(original, ["pending", "Ultra Speaker"]), rewrite) == problem


def test_id_tokens():
    assert id_tokens("Order ORD-171492's total, 12.50, (a.b9@example.com) on 2026-01-01T17:58.") == \
        {"ord-171492", "a.b9@example.com", "2026-01-01t17:58"}


@pytest.mark.parametrize("role, original, rewrite, reason", [
    ("assistant", "I can't do that: order ORD-1 is shipped.", "Sorry, I'm unable to help there: ORD-1 has shipped.", None),
    ("user", "Thanks, that's all.", "I apologize, that's all.", "refusal"),
    ("user", "Where does my order stand?", "How can I help you with your order?", "wrong_speaker"),
    ("assistant", "Your order has shipped.", "My order has shipped.", "wrong_speaker"),
    ("user", "Is it in stock?", '"Do you have it in stock?"', None),  # one pair of quotes around it all is dropped
    # SmolLM2 kept a fact only in echoed scaffolding
    ("assistant", "The reference is RMA-R0046; 22.99 will be refunded.",
     "The reference RMA-R0046 is correct.\n\nTRY:\nthe reference is RMA-R0046; 22.99 will be refunded.", "malformed"),
    ("assistant", "Flight LAX-JFK: it leaves at 9.", "Flight LAX-JFK: it departs at 9.", None),  # not a label line
])
def test_a_reply_must_be_one_message_of_its_speaker(role, original, rewrite, reason):
    text = clean(rewrite)
    problem = reply_problem(role, original, completion_result(text), text, 3.0)
    assert (problem and problem[0]) == reason


def completion_result(text):
    return ChatResult(content=text, tool_calls=[], finish_reason="stop", prompt_tokens=1, completion_tokens=1,
                      latency_s=0.0)
