"""pass@k and pass^k against hand-computed values (c=0, c=n, k=n included), and n<k as an error."""

import pytest

from toolturn.evaluate.metrics import pass_at_k, pass_hat_k, stderr_pass_1, summarise


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
