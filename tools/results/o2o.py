"""Offline-to-online fine-tuning (issues 32, 43, 46): the runs of the variants iql_o2o, awac_o2o, cql_o2o,
calql_o2o (Cal-QL), sac_scratch and sac_scratch_cql, read per run at the switch (the mean of its last 3 offline
evaluations), through the online phase (x = environment steps) and at its end (the run's score, its last 3
evaluations); results/o2o.md and o2o.png, and the parts of claims 9, 9b, 10, 10b and 11."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .runs import LAST, SCORE, RunRecord, last_mean, plural, steps_text
from .stats import Stat, mean_std
from .tables import markdown_table
from .verdicts import GREATER, Part, counted, make_part

O2O = ["iql_o2o", "awac_o2o", "cql_o2o", "calql_o2o", "sac_scratch", "sac_scratch_cql"]  # fine-tuned, or from scratch
O2O_DATASETS = ["local/hopper/medium-replay-v0", "local/halfcheetah/medium-replay-v0"]
EARLY = 0.2  # the drop: the worst evaluation in the first fifth of the online budget
DIP = 0.5  # the dip: the lowest 3-evaluation mean in the first half of the online budget (claim 10b: 5000 of 10000)
ENV_STEPS = "env_steps"


def dip(before: list[float], window: list[float]) -> Optional[float]:
    """The mean of before's last 3 evaluations minus the lowest mean of 3 consecutive evaluations of window
    (results/protocol.md, claim 10b); None with nothing before or fewer than 3 evaluations in the window."""
    if not before or len(window) < LAST:
        return None
    return last_mean(before) - min(float(np.mean(window[j:j + LAST])) for j in range(len(window) - LAST + 1))


@dataclass
class Online:
    """One run read as offline -> online: its offline evaluations (x = updates - max_steps <= 0) and its online
    ones (x = environment steps)."""
    run: RunRecord
    offline: int  # offline updates (max_steps)
    online_steps: int
    offline_curve: list[tuple[int, float]]  # (updates - max_steps, score) of the offline evaluations: x <= 0
    curve: list[tuple[int, float]]  # (environment steps, score) of the online evaluations

    @property
    def switch(self) -> Optional[float]:
        """The mean of the last 3 offline evaluations; None from scratch."""
        return last_mean([s for _, s in self.offline_curve]) if self.offline_curve else None

    @property
    def end(self) -> float:
        """The run's score: the mean of its last 3 evaluations."""
        return self.run.score

    @property
    def end_minus_switch(self) -> Optional[float]:
        return None if self.switch is None else self.end - self.switch

    @property
    def drop(self) -> Optional[float]:
        """The initial collapse (claim 10): the switch minus the worst evaluation in the first fifth online."""
        early = [score for steps, score in self.curve if steps <= EARLY * self.online_steps]
        return None if self.switch is None or not early else self.switch - min(early)

    @property
    def dip(self) -> Optional[float]:
        """Claim 10b's dip: the switch minus the lowest 3-evaluation mean with 0 < environment steps <= half the
        online budget."""
        return dip([s for _, s in self.offline_curve],
                   [score for steps, score in self.curve if 0 < steps <= DIP * self.online_steps])

    @property
    def placebo(self) -> Optional[float]:
        """The same rule inside the offline phase: half the offline updates as the "switch" (the mean of the
        evaluations up to it), the evaluations after it up to the real switch as the window."""
        half = -self.offline / 2
        return dip([s for x, s in self.offline_curve if x <= half], [s for x, s in self.offline_curve if x > half])

    @property
    def points(self) -> tuple[list[int], list[float]]:
        """The whole run for plotting: the offline evaluations at x = updates before the switch (<= 0, the switch at
        0), then the online ones at x = environment steps."""
        steps, scores = zip(*(self.offline_curve + self.curve))
        return list(steps), list(scores)


def online_view(run: RunRecord) -> Optional[Online]:
    """The run as offline -> online, or None while it has not reached its online phase's end."""
    config = run.config
    offline, online_steps = int(config.get("max_steps", 0)), int(config.get("online_steps") or 0)
    if not online_steps or run.finished_step is None:
        return None
    curve = [(int(e.get(ENV_STEPS, 0)), e[SCORE]) for e in run.evaluations if e["step"] > offline]
    if not curve:
        return None
    offline_curve = [(e["step"] - offline, e[SCORE]) for e in run.evaluations if e["step"] <= offline]
    return Online(run, offline, online_steps, offline_curve, curve)


def o2o_runs(runs: list[RunRecord]) -> dict[tuple[str, str], list[Online]]:
    """(variant, dataset) -> its finished runs as offline -> online."""
    cells: dict[tuple[str, str], list[Online]] = {}
    for run in runs:
        view = online_view(run) if run.variant in O2O else None
        if view is not None:
            cells.setdefault((run.variant, run.dataset), []).append(view)
    return cells


# --- the parts of claims 9-11 (their sentences: readings.py)


def claim_cells(runs: list[RunRecord], episodes: Optional[int] = None) -> dict[tuple[str, str], list[Online]]:
    """The finished runs at their claim's budget and cadence (and with that many evaluation episodes)."""
    return o2o_runs([r for r in runs if counted(r) and (episodes is None or r.config.get("eval_episodes") == episodes)])


def values(views: list[Online], value: Callable[[Online], Optional[float]]) -> Optional[Stat]:
    """The seeds' values (those that have one), or None."""
    found = [(v.run.seed, value(v)) for v in views if value(v) is not None]
    return Stat([x for _, x in found], seeds=[seed for seed, _ in found]) if found else None


def compare(cells: dict, a: str, b: str, dataset: str, label: str, value: Callable[[Online], Optional[float]]) -> Part:
    """value(a) - value(b) > 0 on Welch's interval over the seeds."""
    return make_part(dataset, GREATER, [(v, values(cells.get((v, dataset), []), value)) for v in (a, b)], label)


def end_parts(runs: list[RunRecord], a: str, b: str) -> list[Part]:
    """a - b at the end of the online budget (the runs' scores), on each dataset of claim 9."""
    cells = claim_cells(runs)
    return [compare(cells, a, b, dataset, "end of the online budget", lambda o: o.end) for dataset in O2O_DATASETS]


def drop_part(runs: list[RunRecord], dataset: str) -> Part:
    """Claim 10: the drop of cql_o2o minus that of calql_o2o."""
    return compare(claim_cells(runs), "cql_o2o", "calql_o2o", dataset, f"drop in the first {EARLY:.0%} online",
                   lambda o: o.drop)


def dip_part(runs: list[RunRecord], dataset: str, episodes: int) -> tuple[Part, Part]:
    """Claim 10b: the dip of cql_o2o minus that of calql_o2o, and the same rule inside the offline phase (the
    metric's own noise: shown, not decided)."""
    cells = claim_cells(runs, episodes)
    return (compare(cells, "cql_o2o", "calql_o2o", dataset, "dip", lambda o: o.dip),
            compare(cells, "cql_o2o", "calql_o2o", dataset, "placebo dip inside the offline phase",
                    lambda o: o.placebo))


# --- results/o2o.md and o2o.png


def values_text(found: list[float]) -> str:
    return f"{mean_std(found)} (n={len(found)})" if found else "-"


def write_o2o(runs: list[RunRecord], head: list[str], out: Path) -> bool:
    """o2o.md and o2o.png; False (nothing written) when no offline-to-online run has finished."""
    cells = o2o_runs(runs)
    if not cells:
        return False
    groups: dict[tuple, list[Online]] = {}
    for (variant, dataset), views in cells.items():
        for v in views:
            key = (O2O.index(variant), dataset, v.offline, v.online_steps, v.run.config.get("eval_episodes", "?"))
            groups.setdefault(key, []).append(v)
    rows = []
    for (index, dataset, offline, online_steps, episodes), views in sorted(groups.items()):
        columns = [values_text([x for v in views if (x := value(v)) is not None])  # "-" from scratch
                   for value in (lambda v: v.switch, lambda v: v.end, lambda v: v.end_minus_switch, lambda v: v.drop,
                                 lambda v: v.dip)]
        seeds = ", ".join(str(seed) for seed in sorted(v.run.seed for v in views))
        rows.append([O2O[index], dataset, steps_text(offline) if offline else "none", steps_text(online_steps),
                     str(episodes), *columns, seeds])
    lines = ["# Offline-to-online fine-tuning", "", *[f"{line}  " for line in head], "",
             "Each run learns offline for its offline updates, then acts in the dataset's environment for the online "
             "environment steps (tools/shared/online.py); sac_scratch and sac_scratch_cql start online from nothing "
             "(cql.py with no offline phase and no regularizer: SAC, sac_scratch with SAC's own settings and 10k "
             "random warm-up steps, sac_scratch_cql with CQL's). Scores are local normalized scores, mean ± sample "
             "std over seeds (n). Switch: the mean of the run's last 3 offline evaluations. End: the run's score, "
             "the mean of its last 3 evaluations. End minus switch: per run. Drop (claim 10): the switch minus the "
             f"worst evaluation in the first {EARLY:.0%} of the online budget. Dip (claim 10b): the switch minus the "
             "lowest mean of 3 consecutive online evaluations in the first half of the online budget (0 < "
             "environment steps <= half of it). Curves: [o2o.png](o2o.png), one panel per dataset and online "
             "budget, x = offline updates before the switch (< 0) and online environment steps after it (> 0). "
             "Claims 9, 9b, 10, 10b and 11: [claims.md](claims.md).", "",
             *markdown_table(["variant", "dataset", "offline updates", "online env steps", "eval episodes",
                              "switch (last 3 offline)", "end (last 3)", "end minus switch", "drop (first fifth)",
                              "dip (first half)", "seeds"], rows)]
    (out / "o2o.md").write_text("\n".join(lines) + "\n")
    plot_o2o(cells, out / "o2o.png")
    return True


COLORS = {"iql_o2o": "tab:green", "awac_o2o": "tab:olive", "cql_o2o": "tab:red", "calql_o2o": "tab:purple",
          "sac_scratch": "0.3", "sac_scratch_cql": "0.6"}


def plot_o2o(cells: dict[tuple[str, str], list[Online]], path: Path) -> None:
    """One panel per dataset and online budget (runs of different budgets would squeeze each other): mean ± std over
    seeds, the offline phase left of the switch, the first fifth of the online budget (where the drop is read)
    shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = {d: i for i, d in enumerate(O2O_DATASETS)}
    panels = sorted({(dataset, v.online_steps) for (_, dataset), views in cells.items() for v in views},
                    key=lambda p: (order.get(p[0], len(order)), p[0], p[1]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (dataset, budget) in zip(axes[0], panels):
        for variant in O2O:
            views = [v for v in cells.get((variant, dataset), []) if v.online_steps == budget]
            if not views:
                continue
            grid = sorted({x for v in views for x in v.points[0]})
            series = np.array([np.interp(grid, *v.points, left=np.nan) for v in views])
            mean, std = np.nanmean(series, 0), np.nanstd(series, 0)
            ax.plot(grid, mean, color=COLORS[variant], label=f"{variant} ({plural(len(views), 'seed')})")
            ax.fill_between(grid, mean - std, mean + std, color=COLORS[variant], alpha=0.15)
        ax.axvline(0, color="0.5", linestyle=":", linewidth=1)
        ax.axvspan(0, EARLY * budget, color="0.85", alpha=0.5, linewidth=0, label=f"first {EARLY:.0%} online (drop)")
        ax.set_title(f"{dataset}, {steps_text(budget)} online steps", fontsize=9)
        ax.set_xlabel("updates before the switch (< 0) | online environment steps (> 0)")
        ax.set_ylabel("normalized score (local), mean ± std")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
