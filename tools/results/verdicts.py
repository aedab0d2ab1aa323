"""The decisions of results/protocol.md: which runs count in a claim, each part of a claim decided on its 95% t
interval, and a claim's verdict from its parts: SUPPORTED, CONTRADICTED or UNDECIDED."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .runs import RunRecord, steps_text
from .stats import MIN_SEEDS, Stat, interval_text, mean_interval, welch_interval

SUPPORTED, CONTRADICTED, UNDECIDED = "SUPPORTED", "CONTRADICTED", "UNDECIDED"
SEEDS = 5  # a part is decided only when every side has this many seeds
MARGIN = 10.0  # equivalence: the interval of the difference lies inside ±MARGIN normalized-score points
GREATER, LESS, EQUIVALENT = "greater", "less", "equivalent"  # the tests: > 0, < 0, inside ±MARGIN
MISSING, FEW, STRADDLES = "missing", f"n < {SEEDS}", "straddles"  # why a part is UNDECIDED

# The budget a variant's runs are read at in the claims, as the committed sweeps ran them (results/reproduce.md;
# claims 9-11 and P of results/protocol.md): (offline updates, online environment steps, evaluation every N updates).
BUDGETS: dict[str, tuple[int, int, int]] = {
    **dict.fromkeys(["bc", "bc_10", "awr", "td3_bc", "iql", "td3_nobc", "mopo", "mopo_nopen", "td3_bc_bf16",
                     "iql_bf16"], (50_000, 0, 5_000)),
    "bcq": (20_000, 0, 5_000),
    **dict.fromkeys(["cql", "combo", "cql_mean_target", "cql_bf16", "combo_bf16"], (10_000, 0, 2_000)),
    "dt": (8_000, 0, 2_000),
    **dict.fromkeys(["iql_o2o", "awac_o2o"], (50_000, 50_000, 2_500)),
    **dict.fromkeys(["sac_scratch", "sac_scratch_cql"], (0, 50_000, 2_500)),
    **dict.fromkeys(["cql_o2o", "calql_o2o"], (10_000, 10_000, 500)),
}


def run_budget(run: RunRecord) -> tuple[int, int, int]:
    """(offline updates, online environment steps, evaluation every) of a run's config."""
    config = run.config
    return int(config.get("max_steps", 0)), int(config.get("online_steps") or 0), int(config.get("eval_every", 0))


def counted(run: RunRecord) -> bool:
    """A finished run at its claim's budget and cadence (a variant no claim names: any finished run)."""
    if not run.evaluations:
        return False
    offline, online, _ = run_budget(run)
    finished = run.finished_step is not None if online else run.budget == offline
    return finished and run_budget(run) == BUDGETS.get(run.variant, run_budget(run))


def budget_text(run: RunRecord) -> str:
    """'50k updates, evaluation every 5k' ('10k updates + 10k environment steps, ...'; an unfinished offline run
    adds its last evaluation)."""
    offline, online, every = run_budget(run)
    text = f"{steps_text(offline)} updates" + (f" + {steps_text(online)} environment steps" if online else "")
    if online:
        unfinished = "" if run.finished_step is not None else ", unfinished"
    else:
        unfinished = "" if run.budget == offline else f", last evaluation at {steps_text(run.budget)}"
    return f"{text}, evaluation every {steps_text(every)}{unfinished}"


def side_of(test: str, low: float, high: float) -> str:
    """Where an interval lies against the test's threshold: on the claim's side, the other, or across."""
    if test == GREATER:
        return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else UNDECIDED
    if test == LESS:
        return SUPPORTED if high < 0 else CONTRADICTED if low > 0 else UNDECIDED
    if -MARGIN <= low and high <= MARGIN:
        return SUPPORTED
    return CONTRADICTED if low > MARGIN or high < -MARGIN else UNDECIDED


def threshold(test: str) -> str:
    return f"±{MARGIN:g}" if test == EQUIVALENT else "0"


WHERE = {GREATER: {SUPPORTED: "above 0", CONTRADICTED: "below 0", UNDECIDED: "straddles 0"},
         LESS: {SUPPORTED: "below 0", CONTRADICTED: "above 0", UNDECIDED: "straddles 0"},
         EQUIVALENT: {SUPPORTED: f"inside ±{MARGIN:g}", CONTRADICTED: f"entirely outside ±{MARGIN:g}",
                      UNDECIDED: f"across ±{MARGIN:g}"}}


@dataclass
class Part:
    """One tested piece of a claim on one dataset: a difference of two cells (Welch's t) or a per-seed quantity
    (one-sample t), its 95% interval and its verdict."""
    dataset: str
    test: str  # GREATER, LESS or EQUIVALENT
    samples: list[tuple[str, Optional[Stat]]]  # (variant, its per-seed values): one for one-sample t, two for a - b
    label: str = ""  # the quantity: "" for a difference of scores, "drop", "cql's Q(s0, pi(s0)) - G", ...
    detail: str = ""  # the per-seed numbers behind a one-sample quantity, or why it is missing
    diff: Optional[float] = None  # the mean (difference), shown even without an interval
    low: Optional[float] = None
    high: Optional[float] = None
    side: str = UNDECIDED  # where the interval lies, whatever the seeds
    verdict: str = UNDECIDED
    reason: str = ""  # why UNDECIDED: MISSING, FEW or STRADDLES

    @property
    def n(self) -> int:
        """The fewest seeds of a side (0 when a side is missing)."""
        return min((s.n if s else 0) for _, s in self.samples)

    @property
    def variants(self) -> list[str]:
        return [name for name, _ in self.samples]

    @property
    def name(self) -> str:
        """'td3_bc - bc', 'cql_o2o - calql_o2o (dip)', or the one-sample quantity."""
        if len(self.samples) == 1:
            return self.label
        return " - ".join(self.variants) + (f" ({self.label})" if self.label else "")

    @property
    def numbers(self) -> str:
        """The part's numbers: the cells (or what is missing), the difference and its interval."""
        if self.reason == MISSING:
            ran = [f"{name} {s.text()}" for name, s in self.samples if s]
            absent = [name for name, s in self.samples if not s]
            why = self.detail or f"{' and '.join(absent)} not run at the claim's budget"
            return f"{self.dataset}: {self.name}: missing: {why}{'; ' + ', '.join(ran) if ran else ''}"
        if len(self.samples) == 2:
            (a, sa), (b, sb) = self.samples
            numbers = f"{self.label + ': ' if self.label else ''}{a} {sa.text()} - {b} {sb.text()} = {self.diff:+.1f}"
            kind = "Welch"
        else:
            numbers, kind = f"{self.label} per seed: {self.detail}; mean {self.diff:+.1f}", "one-sample"
        interval = (f", 95% {kind} t interval {interval_text(self.low, self.high)}, {WHERE[self.test][self.side]}"
                    if self.low is not None else ", no interval (1 seed)")
        return f"{self.dataset}: {numbers}{interval}"

    @property
    def line(self) -> str:
        """The numbers, the verdict and why."""
        return f"{self.numbers}: {self.verdict}{f' ({self.reason})' if self.reason else ''}."


def make_part(dataset: str, test: str, samples: list[tuple[str, Optional[Stat]]], label: str = "",
              detail: str = "") -> Part:
    """Decides a part: UNDECIDED when a side is missing or has fewer than SEEDS seeds or when the interval
    straddles the threshold; otherwise SUPPORTED or CONTRADICTED by the side the interval lies on."""
    part = Part(dataset, test, samples, label, detail)
    if part.n == 0:
        part.reason = MISSING
        return part
    values = [s.values for _, s in samples]
    means = [float(np.mean(v)) for v in values]
    part.diff = means[0] - means[1] if len(means) == 2 else means[0]
    if part.n >= MIN_SEEDS:
        part.diff, part.low, part.high = welch_interval(*values) if len(values) == 2 else mean_interval(values[0])
        part.side = side_of(test, part.low, part.high)
    if part.n < SEEDS:
        part.reason = FEW
    elif part.side == UNDECIDED:
        part.reason = STRADDLES
    else:
        part.verdict = part.side
    return part


def combine(parts: list[Part]) -> str:
    """A claim's verdict: SUPPORTED when every part is, CONTRADICTED when any part is, otherwise UNDECIDED."""
    verdicts = [p.verdict for p in parts]
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    return CONTRADICTED if CONTRADICTED in verdicts else UNDECIDED
