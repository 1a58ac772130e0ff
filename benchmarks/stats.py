"""Statistics over seeds: a 95% t interval for a mean, and Welch's test to decide a "best".

The test is named in every table's caption (:data:`TEST_NAME`) so a reader knows what the bold means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sps

ALPHA = 0.05
TEST_NAME = "Welch's t-test, one-sided, alpha = 0.05"


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); nan for n = 1
    half_width: float  # of the 95% t interval; nan for n = 1 (no interval from one value)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def summarise(values: list[float]) -> Summary:
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, std, float(sps.t.ppf(0.975, n - 1)) * std / math.sqrt(n))


def better_by_welch(best: list[float], other: list[float], direction: str) -> bool:
    """True where Welch's one-sided test rejects "``other`` is as good as ``best``" at :data:`ALPHA`.

    Fewer than two values on either side cannot be tested: False. Two constant samples (zero
    variance, e.g. a deterministic evaluation) are separated exactly when their means differ the
    right way."""
    if len(best) < 2 or len(other) < 2:
        return False
    a, b = summarise(best), summarise(other)
    sign = 1.0 if direction == "higher" else -1.0
    if a.std == 0 and b.std == 0:
        return sign * (a.mean - b.mean) > 0
    alternative = "greater" if direction == "higher" else "less"
    p = sps.ttest_ind(best, other, equal_var=False, alternative=alternative).pvalue
    return bool(p < ALPHA)


def pick_best(samples: dict[str, list[float]], direction: str | None) -> str | None:
    """The row to mark best: the best finite mean, and only if Welch's test separates it from every
    other row with a finite mean. None where there is no direction, fewer than two rows, or no
    separation. A row whose mean is not finite (a NaN seed) is never best and never a rival."""
    if direction not in ("lower", "higher"):
        return None
    means = {r: summarise(v).mean for r, v in samples.items() if v}
    finite = {r: m for r, m in means.items() if math.isfinite(m)}
    if len(finite) < 2:
        return None
    pick = max if direction == "higher" else min
    best = pick(finite, key=finite.get)
    rivals = [r for r in finite if r != best]
    return best if all(better_by_welch(samples[best], samples[r], direction) for r in rivals) else None
