"""Statistics as the field reports them: per-cell mean ± std over seeds with n and budget, the interquartile
mean, and rliable's stratified bootstrap for 95% confidence intervals (seeded: the same logs give the same
intervals)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .runs import RunRecord, steps_text

REPS = 5000  # bootstrap resamples (make_results --reps sets it)
BOOTSTRAP_SEED = 0
MIN_SEEDS = 2  # an interval needs two seeds a side; one seed decides nothing


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
        return float(np.std(self.values))  # population std (ddof 0), so that one seed gives 0

    @property
    def has_d4rl(self) -> bool:
        return len(self.d4rl) == self.n > 0

    @property
    def d4rl_mean(self) -> float:
        return float(np.mean(self.d4rl))

    @property
    def d4rl_std(self) -> float:
        return float(np.std(self.d4rl))

    def budget_text(self) -> str:
        low, high = min(self.budgets, default=0), max(self.budgets, default=0)
        return steps_text(low) if low == high else f"{steps_text(low)}-{steps_text(high)}"

    def text(self) -> str:
        """Local normalization only: '22.1 ± 2.1 (n=3, 50k)'."""
        return f"{self.mean:.1f} ± {self.std:.1f} (n={self.n}, {self.budget_text()})"

    def both_text(self) -> str:
        """Local, then D4RL's scale when there is one: '22.1 ± 2.1 / D4RL 13.9 ± 1.3 (n=3, 50k)'."""
        d4rl = f" / D4RL {self.d4rl_mean:.1f} ± {self.d4rl_std:.1f}" if self.has_d4rl else ""
        return f"{self.mean:.1f} ± {self.std:.1f}{d4rl} (n={self.n}, {self.budget_text()})"


def score_table(runs: list[RunRecord]) -> dict[tuple[str, str], dict[str, Stat]]:
    """(variant, dataset) -> {"final": Stat, "best": Stat} over the seeds that evaluated at least once."""
    table: dict[tuple[str, str], dict[str, Stat]] = {}
    for run in runs:
        if not run.evaluations:
            continue
        cell = table.setdefault((run.variant, run.dataset), {"final": Stat([]), "best": Stat([])})
        best = int(np.argmax(run.scores))
        d4rl = run.d4rl_scores
        for which, index in (("final", -1), ("best", best)):
            cell[which].values.append(run.scores[index])
            cell[which].budgets.append(run.budget)
            cell[which].seeds.append(run.seed)
            if d4rl is not None:
                cell[which].d4rl.append(d4rl[index])
    return table


def cell(table, variant: str, dataset: str) -> Optional[Stat]:
    return table[variant, dataset]["final"] if (variant, dataset) in table else None


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


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) with a 95% CI, the seeds resampled within each side."""
    return bootstrap([a, b], lambda x, y: x.mean() - y.mean())


def mean_interval(x: list[float]) -> tuple[float, float, float]:
    return bootstrap([x], lambda v: v.mean())


def iqm(values: np.ndarray) -> float:
    from rliable import metrics

    return float(metrics.aggregate_iqm(values))


def iqm_interval(per_dataset: list[list[float]]) -> tuple[float, float, float]:
    """Interquartile mean over every (dataset, seed) score, with the stratified bootstrap 95% CI (seeds
    resampled within each dataset)."""
    return bootstrap(per_dataset, lambda *xs: iqm(np.concatenate(xs)))


def interval_text(low: float, high: float) -> str:
    return f"[{low:.1f}, {high:.1f}]"
