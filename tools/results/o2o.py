"""Offline-to-online fine-tuning (issue 32): the runs of the variants iql_o2o, awac_o2o, cql_o2o, calql_o2o (Cal-QL)
and sac_scratch, read per run at the switch (the last offline evaluation, at max_steps updates), through the online
phase (x = environment steps), and at its end; results/o2o.md and o2o.png, and claims 9 and 10."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .runs import HOPPER_MEDIUM_REPLAY, SCORE, RunRecord, dataset_name, plural, steps_text
from .stats import MIN_SEEDS, difference_interval, interval_text
from .tables import markdown_table

# Fine-tuned after an offline phase, or from scratch.
O2O = ["iql_o2o", "awac_o2o", "cql_o2o", "calql_o2o", "sac_scratch"]
PRETRAINED = ["iql_o2o", "awac_o2o", "cql_o2o", "calql_o2o"]
O2O_DATASETS = ["local/hopper/medium-replay-v0", "local/halfcheetah/medium-replay-v0"]
EARLY = 0.2  # "the first fifth of the online budget", where the initial collapse is measured
ENV_STEPS = "env_steps"


@dataclass
class Online:
    """One run read as offline -> online: its score at the switch (None from scratch), its (env steps, score)
    evaluations of the online phase, the final score and the worst score in the first fifth of the online budget."""
    run: RunRecord
    online_steps: int
    offline_curve: list[tuple[int, float]]  # (updates - max_steps, score) of the offline evaluations: x <= 0
    curve: list[tuple[int, float]]  # (environment steps, score) of the online evaluations

    @property
    def switch(self) -> Optional[float]:
        """The last offline evaluation, at max_steps updates (x = 0); None from scratch."""
        return next((score for x, score in self.offline_curve if x == 0), None)

    @property
    def final(self) -> float:
        return self.curve[-1][1]

    @property
    def early_worst(self) -> Optional[float]:
        early = [score for steps, score in self.curve if steps <= EARLY * self.online_steps]
        return min(early) if early else None

    @property
    def drop(self) -> Optional[float]:
        """The initial collapse: the switch's score minus the worst score in the first fifth of the online budget."""
        return None if self.switch is None or self.early_worst is None else self.switch - self.early_worst

    @property
    def points(self) -> tuple[list[int], list[float]]:
        """The whole run for plotting: the offline evaluations at x = updates before the switch (<= 0, the switch at
        0), then the online ones at x = environment steps."""
        steps, scores = zip(*(self.offline_curve + self.curve))
        return list(steps), list(scores)


def online_view(run: RunRecord) -> Optional[Online]:
    """The run as offline -> online, or None while it has not reached its online phase's end."""
    config = run.config
    offline, online_steps = int(config.get("max_steps", 0)), int(config.get("online_steps", 0))
    if not online_steps or run.finished_step is None:
        return None
    curve = [(int(e.get(ENV_STEPS, 0)), e[SCORE]) for e in run.evaluations if e["step"] > offline]
    if not curve:
        return None
    offline_curve = [(e["step"] - offline, e[SCORE]) for e in run.evaluations if e["step"] <= offline]
    return Online(run, online_steps, offline_curve, curve)


def o2o_runs(runs: list[RunRecord]) -> dict[tuple[str, str], list[Online]]:
    """(variant, dataset) -> its finished runs as offline -> online."""
    cells: dict[tuple[str, str], list[Online]] = {}
    for run in runs:
        view = online_view(run) if run.variant in O2O else None
        if view is not None:
            cells.setdefault((run.variant, run.dataset), []).append(view)
    return cells


def values_text(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f} (n={len(values)})" if values else "-"


def comparison(cells: dict, a: str, b: str, dataset: str, what: str,
               value) -> tuple[Optional[bool], str, Optional[tuple]]:
    """value(run of a) - value(run of b) > 0 on a 95% CI over the seeds, or None with what is missing: fewer than
    MIN_SEEDS finished runs a side, or runs at different online budgets."""
    runs_a, runs_b = ([o for o in cells.get((v, dataset), []) if value(o) is not None] for v in (a, b))
    budgets = {o.online_steps for o in runs_a + runs_b}
    if len(budgets) > 1:
        return None, f"{dataset}: {what}: missing: {a} and {b} runs at one online budget (found {sorted(budgets)}).", None
    if min(len(runs_a), len(runs_b)) < MIN_SEEDS:
        return None, (f"{dataset}: {what}: missing: {len(runs_a)} finished {a} run{'s' * (len(runs_a) != 1)} and "
                      f"{len(runs_b)} {b} run{'s' * (len(runs_b) != 1)} on {dataset} (an interval needs {MIN_SEEDS} a "
                      "side)."), None
    va, vb = [value(o) for o in runs_a], [value(o) for o in runs_b]
    diff, low, high = difference_interval(va, vb)
    ok = low > 0
    return ok, (f"{dataset}: {what}: {a} {values_text(va)} - {b} {values_text(vb)} = {diff:+.1f}, 95% CI "
                f"{interval_text(low, high)}: {'above 0, supports' if ok else 'not above 0, does not support'} the "
                "claim."), (diff, low, high)


def not_decided(lines: list[str]) -> str:
    return "Not decided yet: " + "; ".join(line.split("missing: ", 1)[1].rstrip(".") for line in lines
                                           if "missing: " in line) + "."


def claim_pretraining_pays(runs: list[RunRecord]) -> tuple[str, list[str], str]:
    """Claim 9: iql_o2o's final score minus sac_scratch's, at the same online budget, above 0 on each dataset."""
    cells, results, lines, diffs = o2o_runs(runs), [], [], {}
    for dataset in O2O_DATASETS:
        ok, line, numbers = comparison(cells, "iql_o2o", "sac_scratch", dataset, "score at the end of the online "
                                       "budget", lambda o: o.final)
        results.append(ok)
        lines.append(line)
        if numbers:
            n_tuned, n_scratch = len(cells[("iql_o2o", dataset)]), len(cells[("sac_scratch", dataset)])
            seeds = (f"{plural(n_tuned, 'seed')} a side" if n_tuned == n_scratch else
                     f"{n_tuned} iql_o2o and {n_scratch} sac_scratch seeds")
            diffs[dataset] = (ok, dataset_name(dataset), f"{numbers[0]:+.1f} {interval_text(numbers[1], numbers[2])} "
                                                         f"with {seeds}")
    verdict = "FAIL" if False in results else "NOT RUN" if None in results else "PASS"
    missing = f"; {not_decided(lines)[0].lower()}{not_decided(lines)[1:-1]}" if None in results else ""
    held = [f"{name} ({text})" for ok, name, text in diffs.values() if ok]
    failed = [f"{text} on {name}" for ok, name, text in diffs.values() if not ok]
    reading = {"PASS": f"Supported: offline pretraining leads SAC from scratch on {' and '.join(held)} after the "
                       "same online environment steps.",
               "FAIL": (f"Holds on {' and '.join(held)}; not" if held else "Not") + " supported at this budget: "
                       f"iql_o2o - sac_scratch = {' and '.join(failed)}, "
                       f"{'an interval that does' if len(failed) == 1 else 'intervals that do'} not lie above 0{missing}.",
               "NOT RUN": not_decided(lines)}[verdict]
    return verdict, lines, reading


def claim_calibration(runs: list[RunRecord]) -> tuple[str, list[str], str]:
    """Claim 10: the initial collapse (switch - worst of the first fifth online) of cql minus that of Cal-QL, above 0
    on Hopper medium-replay."""
    ok, line, numbers = comparison(o2o_runs(runs), "cql_o2o", "calql_o2o", HOPPER_MEDIUM_REPLAY,
                                   f"drop in the first {EARLY:.0%} of the online budget", lambda o: o.drop)
    if ok is None:
        return "NOT RUN", [line], not_decided([line])
    if ok:
        return "PASS", [line], (f"Supported: calibration cuts the initial collapse by {numbers[0]:+.1f} points on "
                                "Hopper medium-replay.")
    return "FAIL", [line], (f"Not supported: cql's drop minus Cal-QL's is {numbers[0]:+.1f} "
                            f"{interval_text(numbers[1], numbers[2])}, an interval that does not lie above 0.")


def write_o2o(runs: list[RunRecord], head: list[str], out: Path) -> bool:
    """o2o.md and o2o.png; False (nothing written) when no offline-to-online run has finished."""
    cells = o2o_runs(runs)
    if not cells:
        return False
    rows = []
    for (variant, dataset), views in sorted(cells.items(), key=lambda kv: (O2O.index(kv[0][0]), kv[0][1])):
        config = views[0].run.config
        offline = int(config.get("max_steps", 0))
        switch = [v.switch for v in views if v.switch is not None]
        drops = [v.drop for v in views if v.drop is not None]
        rows.append([variant, dataset, steps_text(offline) if offline else "none",
                     steps_text(views[0].online_steps), values_text(switch), values_text([v.final for v in views]),
                     values_text(drops) if variant in PRETRAINED else "-",
                     ", ".join(str(v.run.seed) for v in views)])
    lines = ["# Offline-to-online fine-tuning", "", *[f"{line}  " for line in head], "",
             "Each run learns offline for its offline updates, then acts in the dataset's environment for the online "
             "environment steps (one update per step, half of each batch from its own online episodes: "
             "tools/shared/online.py); sac_scratch starts online from nothing (cql.py with no offline phase and no "
             "regularizer: SAC). Scores are local normalized scores, mean ± std over seeds (n). At the switch: the "
             "last offline evaluation. Drop: the score at the switch minus the worst evaluation in the first "
             f"{EARLY:.0%} of the online budget (the initial collapse). Curves: [o2o.png](o2o.png), one panel per "
             "dataset and online budget, x = offline updates before the switch (< 0) and online environment steps "
             "after it (> 0). Claims 9 and 10: [claims.md](claims.md).", "",
             *markdown_table(["variant", "dataset", "offline updates", "online env steps", "at the switch",
                              "end of online budget", "drop (first fifth)", "seeds"], rows)]
    (out / "o2o.md").write_text("\n".join(lines) + "\n")
    plot_o2o(cells, out / "o2o.png")
    return True


COLORS = {"iql_o2o": "tab:green", "awac_o2o": "tab:orange", "cql_o2o": "tab:red", "calql_o2o": "tab:purple",
          "sac_scratch": "0.3"}


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
