"""Statistics as results/protocol.md states them: a run's score (the mean of its last 3 evaluations), per-cell
mean ± sample std over seeds with n and budget, 95% Student t intervals (Welch's for a difference of two cells, the
one-sample interval for a per-seed quantity), and the interquartile mean with rliable's stratified bootstrap (seeded:
the same logs give the same intervals)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from scipy import stats as scipy_stats

from .runs import RunRecord, steps_text

REPS = 5000  # bootstrap resamples (make_results --reps sets it)
BOOTSTRAP_SEED = 0
MIN_SEEDS = 2  # an interval needs two seeds a side; one seed gives no interval
CONFIDENCE = 0.95


def mean_std(values: list[float]) -> str:
    """'22.1 ± 2.1' (sample std, ddof 1); one value shows alone: '22.1'."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


@dataclass
class Stat:
    """One cell: the seeds' scores (local normalization), the same on D4RL's scale (empty without a D4RL
    reference), the updates behind each and the seeds."""
    values: list[float]
    budgets: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    d4rl: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """The sample standard deviation (ddof 1); nan for one seed."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def has_d4rl(self) -> bool:
        return len(self.d4rl) == self.n > 0

    @property
    def d4rl_mean(self) -> float:
        return float(np.mean(self.d4rl))

    @property
    def d4rl_std(self) -> float:
        return float(np.std(self.d4rl, ddof=1)) if self.n > 1 else math.nan

    def budget_text(self) -> str:
        low, high = min(self.budgets, default=0), max(self.budgets, default=0)
        return steps_text(low) if low == high else f"{steps_text(low)}-{steps_text(high)}"

    def text(self) -> str:
        """Local normalization only: '22.1 ± 2.1 (n=3, 50k)' ('22.1 (n=1, 50k)' for one seed)."""
        budget = f", {self.budget_text()}" if self.budgets else ""
        return f"{mean_std(self.values)} (n={self.n}{budget})"

    def both_text(self) -> str:
        """Local, then D4RL's scale when there is one: '22.1 ± 2.1 / D4RL 13.9 ± 1.3 (n=3, 50k)'."""
        d4rl = f" / D4RL {mean_std(self.d4rl)}" if self.has_d4rl else ""
        return f"{mean_std(self.values)}{d4rl} (n={self.n}, {self.budget_text()})"


WHICH = ("score", "last", "best")  # the run's score (mean of its last 3 evaluations), its last evaluation, its best


def score_table(runs: list[RunRecord]) -> dict[tuple[str, str], dict[str, Stat]]:
    """(variant, dataset) -> {"score", "last", "best": Stat} over the seeds that evaluated at least once."""
    table: dict[tuple[str, str], dict[str, Stat]] = {}
    for run in runs:
        if not run.evaluations:
            continue
        cell = table.setdefault((run.variant, run.dataset), {which: Stat([]) for which in WHICH})
        best = int(np.argmax(run.scores))
        d4rl = run.d4rl_scores
        for which, value, d4rl_value in (("score", run.score, run.d4rl_score),
                                         ("last", run.scores[-1], d4rl[-1] if d4rl else None),
                                         ("best", run.scores[best], d4rl[best] if d4rl else None)):
            cell[which].values.append(value)
            cell[which].budgets.append(run.budget)
            cell[which].seeds.append(run.seed)
            if d4rl_value is not None:
                cell[which].d4rl.append(d4rl_value)
    return table


def cell(table, variant: str, dataset: str) -> Optional[Stat]:
    """The cell's scores (each run's mean of its last 3 evaluations), or None without a run."""
    return table[variant, dataset]["score"] if (variant, dataset) in table else None


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) with its 95% Welch t interval (unequal variances, Welch-Satterthwaite degrees of
    freedom); two seeds a side at least.  Returns (difference, low, high)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # both sides constant: the difference is exact
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(scipy_stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
    return diff, diff - half, diff + half


def mean_interval(x: list[float]) -> tuple[float, float, float]:
    """mean(x) with its 95% one-sample Student t interval (n - 1 degrees of freedom); two values at least."""
    x = np.asarray(x, dtype=float)
    mean, se = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(len(x))
    if se == 0:
        return mean, mean, mean
    half = float(scipy_stats.t.ppf((1 + CONFIDENCE) / 2, len(x) - 1)) * se
    return mean, mean - half, mean + half


def bootstrap_arrays(samples: list[list[float]], statistic: Callable[..., np.ndarray]):
    """statistic(*samples) (a 1-D array) and its percentile 95% CI, each sample resampled with replacement on
    its own (rliable's StratifiedIndependentBootstrap: the strata are the samples).  Returns (point, low, high)."""
    from rliable import library as rly

    arrays = [np.asarray(s, dtype=float).reshape(-1, 1) for s in samples]
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)  # rliable draws its indices from numpy's global generator
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            point, interval = rly.get_interval_estimates(
                {"x": arrays}, lambda *xs: np.atleast_1d(statistic(*(x.ravel() for x in xs))), reps=REPS)
    finally:
        np.random.set_state(state)
    return point["x"], interval["x"][0], interval["x"][1]


def bootstrap(samples: list[list[float]], statistic: Callable[..., float]) -> tuple[float, float, float]:
    """A scalar statistic and its 95% CI (see bootstrap_arrays): (point, low, high)."""
    point, low, high = bootstrap_arrays(samples, statistic)
    return float(point[0]), float(low[0]), float(high[0])


def iqm(values: np.ndarray) -> float:
    from rliable import metrics

    return float(metrics.aggregate_iqm(values))


def iqm_interval(per_dataset: list[list[float]]) -> tuple[float, float, float]:
    """Interquartile mean over every (dataset, seed) score, with the stratified bootstrap 95% CI (seeds
    resampled within each dataset)."""
    return bootstrap(per_dataset, lambda *xs: iqm(np.concatenate(xs)))


def interval_text(low: float, high: float) -> str:
    return f"[{low:.1f}, {high:.1f}]"
