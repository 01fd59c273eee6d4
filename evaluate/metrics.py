"""pass@k and pass^k from n samples per task, one estimator each, and the standard error of pass^1.

- pass@k (Chen et al. 2021, unbiased): the chance that at least one of k samples drawn without
  replacement from the n is correct, 1 - C(n-c, k) / C(n, k).
- pass^k (tau-bench): the chance that all k are correct, C(c, k) / C(n, k).
Both equal c/n at k = 1. A benchmark score is the mean over tasks.
"""

from __future__ import annotations

import math
from statistics import mean, stdev


def _check(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n:
        raise ValueError(f"correct samples c={c} must be between 0 and n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} needs 1 <= k <= n, but only n={n} samples were drawn")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k for one task with c of n samples correct."""
    _check(n, c, k)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass^k (all k attempts succeed) for one task with c of n samples correct."""
    _check(n, c, k)
    return math.comb(c, k) / math.comb(n, k)


def stderr_pass_1(rates: list[float]) -> float | None:
    """Standard error of pass^1 = the mean over tasks of c/n (sample std across tasks / sqrt(tasks))."""
    return stdev(rates) / math.sqrt(len(rates)) if len(rates) > 1 else None


def summarise(counts: dict[str, tuple[int, int]], ks: list[int]) -> dict:
    """Benchmark scores from {task: (n scored, c correct)}. Every point of the curve is a mean over the
    same tasks: those with at least max(ks) scored samples. A task that infrastructure errors left
    with fewer is named in `short_tasks` and enters no mean, so pass^k cannot rise with k because
    the task set changed."""
    kmax = max(ks)
    usable = {task: nc for task, nc in counts.items() if nc[0] >= kmax}
    out: dict = {"tasks_in_curve": len(usable), "short_tasks": sorted(set(counts) - set(usable)),
                 "pass_at_k": {}, "pass_hat_k": {}}
    for k in ks:
        out["pass_at_k"][str(k)] = mean(pass_at_k(n, c, k) for n, c in usable.values()) if usable else None
        out["pass_hat_k"][str(k)] = mean(pass_hat_k(n, c, k) for n, c in usable.values()) if usable else None
    out["pass_hat_1_stderr"] = stderr_pass_1([c / n for n, c in usable.values()])
    return out
