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


def test_summary_means_over_tasks_and_skips_tasks_with_fewer_samples_than_k():
    counts = {"a": (4, 4), "b": (4, 0), "c": (2, 1)}  # c lost two samples to infrastructure errors
    s = summarise(counts, [1, 2, 4])
    assert s["pass_hat_k"]["1"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert s["pass_hat_k"]["2"] == pytest.approx((1 + 0 + 0) / 3)
    assert s["pass_hat_k"]["4"] == pytest.approx(0.5) and s["tasks_per_k"]["4"] == 2
    assert s["pass_at_k"]["2"] == pytest.approx((1 + 0 + 1) / 3)
    # sample std of [1, 0, 0.5] is 0.5; / sqrt(3)
    assert s["pass_hat_1_stderr"] == pytest.approx(0.5 / 3 ** 0.5)
    assert stderr_pass_1([0.5]) is None
