"""pass@k and pass^k against hand-computed values (c=0, c=n, k=n included), and n<k as an error; the
tool-call behaviour rates against hand-counted turns and calls, n/a where nothing applies; the reward parts
each over the samples where its check ran, and a report that says what was never evaluated."""

import pytest

from toolturn.evaluate.behaviour import RATES, Rate, behaviour, tool_call_turns, valid_tool_calls
from toolturn.evaluate.metrics import pass_at_k, pass_hat_k, stderr_pass_1, summarise
from toolturn.evaluate.report import behaviour_table, checkpoint_metrics, report_md


@pytest.mark.parametrize("n,c,k,at,hat", [
    (4, 0, 1, 0.0, 0.0), (4, 0, 4, 0.0, 0.0),          # c = 0
    (4, 4, 1, 1.0, 1.0), (4, 4, 4, 1.0, 1.0),          # c = n
    (4, 2, 1, 0.5, 0.5),                               # k = 1: both are c/n
    (4, 2, 2, 1 - 1 / 6, 1 / 6),                       # C(2,2)/C(4,2) = 1/6
    (4, 3, 2, 1.0, 0.5),                               # 1 - C(1,2)/C(4,2) = 1; C(3,2)/C(4,2) = 3/6
    (4, 1, 4, 1.0, 0.0),                               # k = n: pass@n = any correct, pass^n = all correct
    (4, 3, 4, 1.0, 0.0),
    (5, 2, 3, 0.9, 0.0),                               # 1 - C(3,3)/C(5,3) = 1 - 1/10; C(2,3) = 0
])
def test_estimators_match_hand_computed_values(n, c, k, at, hat):
    assert pass_at_k(n, c, k) == pytest.approx(at)
    assert pass_hat_k(n, c, k) == pytest.approx(hat)


@pytest.mark.parametrize("n,c,k", [(2, 1, 3), (1, 0, 2), (4, 5, 1), (4, -1, 1), (4, 2, 0)])
def test_bad_counts_are_clear_errors(n, c, k):
    with pytest.raises(ValueError, match="k=|c="):
        pass_at_k(n, c, k)
    with pytest.raises(ValueError, match="k=|c="):
        pass_hat_k(n, c, k)


def test_summary_means_over_one_task_set_and_names_tasks_short_of_samples():
    counts = {"a": (4, 4), "b": (4, 0), "c": (2, 2)}  # c lost two samples to infrastructure errors
    s = summarise(counts, [1, 2, 4])
    assert s["tasks_in_curve"] == 2 and s["short_tasks"] == ["c"]  # c would have lifted pass^1 and pass^2 only
    assert s["pass_hat_k"] == pytest.approx({"1": 0.5, "2": 0.5, "4": 0.5})
    assert s["pass_at_k"]["2"] == pytest.approx(0.5)
    assert s["pass_hat_1_stderr"] == pytest.approx(0.5 ** 0.5 / 2 ** 0.5)  # stdev of [1, 0] / sqrt(2)
    mixed = summarise({"a": (4, 1), "b": (4, 3)}, [1, 2, 3, 4])
    assert mixed["pass_hat_k"]["1"] == pytest.approx(0.5) and mixed["pass_hat_k"]["2"] == pytest.approx(0.25)
    assert stderr_pass_1([0.5]) is None


def _turn(*calls, content=""):
    return {"role": "assistant", "content": content,
            "tool_calls": [{"id": f"c{i}", "type": "function", "function": c} for i, c in enumerate(calls)]}


def test_tool_call_rates_count_the_turns_and_calls_they_are_over(retail):
    tools = {t.name: t for t in retail.tools}
    good = {"name": "find_customer_by_email", "arguments": {"email": "a@example.com"}}
    episode = [{"role": "user", "content": "hi"},
               _turn(good, {"name": "no_such_tool", "arguments": {}}),            # well-formed; one call invalid
               {"role": "tool", "tool_call_id": "c0", "name": good["name"], "content": "{}"},
               _turn({"name": good["name"], "arguments": '{"email": '}),           # undecoded arguments
               _turn({"name": good["name"], "arguments": {"mail": "a@example.com"}}),  # an argument it lacks
               {"role": "assistant", "content": "Anything else?"}]
    assert tool_call_turns([episode]) == Rate(2 / 4, 4)
    assert valid_tool_calls([episode], tools) == Rate(1 / 4, 4)
    text_only = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]
    assert tool_call_turns([text_only]) == Rate(0.0, 1)
    assert valid_tool_calls([text_only], tools) == Rate(None, 0)  # no call: n/a, not 0


def test_rows_without_our_episodes_leave_every_rate_not_applicable():
    bfcl_like = [{"checkpoint": "base", "infra_error": None, "messages": [{"role": "assistant", "content": "[f(x=1)]"}]}]
    assert behaviour(bfcl_like, None) == {r: {"value": None, "n": 0} for r in RATES}
    lines = behaviour_table({"checkpoints": {"base": {"behaviour": behaviour(bfcl_like, None)}}})
    assert lines[-1].startswith("Behaviour rates: n/a") and "0.000" not in "".join(lines)


def _row(task: str, sample: int, reward: float | None, parts: dict, evaluated: bool = True, termination: str = "user_stop",
         infra: str | None = None) -> dict:
    return {"checkpoint": "base", "task_id": task, "sample": sample, "reward": reward, "parts": parts,
            "evaluated": evaluated, "termination": termination, "infra_error": infra, "assistant_digest": str(sample)}


def test_a_part_rate_counts_only_the_samples_where_its_check_ran():
    rows = [_row("a", 0, 1.0, {"db": True, "communicate": True}),
            _row("a", 1, 0.0, {"db": False, "communicate": None}),  # the task's communicate check did not run
            _row("b", 0, 0.0, {"db": None, "communicate": None}, evaluated=False, termination="max_steps"),
            _row("b", 1, None, {}, infra="timeout", termination="infra_error")]
    m = checkpoint_metrics(rows, 2, ("db", "communicate"))
    assert m["parts"] == {"db": 0.5, "communicate": 1.0} and m["parts_n"] == {"db": 2, "communicate": 1}
    assert (m["samples"], m["scored_samples"], m["evaluated"]) == (4, 3, 2)
    assert m["not_evaluated"] == {"max_steps": 1} and m["infra_error_samples"] == 1


def test_a_report_where_nothing_was_evaluated_says_so_and_shows_no_rate():
    rows = [_row(t, k, 0.0, {"db": None}, evaluated=False, termination="max_steps") for t in "ab" for k in range(2)]
    m = checkpoint_metrics(rows, 2, ("db",))
    metrics = {"suite": "s", "domain": "d", "user": "u", "num_tasks": 2, "seed": 0, "n": 2, "parts": ["db"],
               "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 8}, "checker": "the checker",
               "not_evaluated_rule": "Unevaluated samples score 0.",
               "floor": {"domain": "d", "pass_hat_1": None, "tasks_needing_write": 0},
               "checkpoints": {"base": {**m, "identity": {"kind": "rule", "label": "base"}, "floor": None,
                                        "behaviour": {}}}}
    report = report_md(metrics)
    assert m["parts"] == {"db": None} and m["pass_hat_k"]["1"] == 0.0  # the benchmark's 0, and no rate at all
    assert "- base: 0 of 4 samples evaluated; not evaluated: max_steps 4" in report
    assert "**Nothing was evaluated for base: the checker never ran on a sample" in report
    assert "| base | not run | max_steps 4 |" in report and "Unevaluated samples score 0." in report
