"""results/scores.md, scores.csv and aggregate.csv: the scores per dataset, the aggregate IQM grouped by budget, the
reading of the longer-budget runs, the dataset builds the runs read, and the failed or unfinished runs."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Optional

from . import stats
from .runs import (CORE, HALF_BUDGET, HEADLINE, PENDULUM, PLANNED, RunRecord, d4rl_citation, dataset_key, plural,
                   steps_text, suite, variant_key)
from .stats import MIN_SEEDS, WHICH, Stat, cell, interval_text, iqm_interval
from .tables import grid, markdown_table, suite_table


SCORE_LEGEND = ("A run's score is the mean of the normalized scores of its last 3 evaluations (results/protocol.md): "
                "for the short budgets (bcq 20k, cql and combo 10k, dt 8k updates) a mean over the later half of "
                "training, not only its end; the last evaluation and the best evaluation have their own tables below. "
                "Each cell: mean ± sample std over seeds (n - 1; one seed shows its value), on the local scale "
                "(0 = the local random policy, 100 = this project's SAC expert of the environment: the "
                "ref_min_score and ref_max_score of the local datasets), then / D4RL on D4RL's scale (the same "
                "returns normalized by D4RL's published random and expert returns), then n = seeds and the updates "
                "of the runs. \"not run\" marks a cell of the planned grid without a run.")


def aggregate(table, variants: list[str], datasets: list[str] = CORE) -> dict[str, dict]:
    """variant -> {"iqm", "low", "high", "d4rl_iqm", "d4rl_low", "d4rl_high", "runs", "budget", "note"}: IQM over
    (core dataset, seed) with its stratified bootstrap CI, local and on D4RL's scale, for the variants with a run
    on every core dataset (a note says what the others miss); one seed on a dataset gives the IQM without a CI
    (its stratum cannot be resampled)."""
    result = {}
    for variant in variants:
        found = [cell(table, variant, d) for d in datasets]
        missing = [d for d, s in zip(datasets, found) if s is None]
        if missing:
            result[variant] = {"note": "not run" if len(missing) == len(datasets) else
                               f"partial: not run on {', '.join(missing)}"}
            continue
        few = [d for d, s in zip(datasets, found) if s.n < MIN_SEEDS]
        budgets = sorted({b for s in found for b in s.budgets})
        entry = {"runs": " + ".join(str(s.n) for s in found), "budgets": budgets,
                 "budget": steps_text(budgets[0]) if len(budgets) == 1 else
                 "mixed: " + ", ".join(map(steps_text, budgets))}
        for prefix, samples in (("", [s.values for s in found]),
                                ("d4rl_", [s.d4rl for s in found] if all(s.has_d4rl for s in found) else None)):
            if samples is None:
                continue
            point, low, high = iqm_interval(samples)
            entry[f"{prefix}iqm"] = point
            if not few:
                entry.update({f"{prefix}low": low, f"{prefix}high": high})
        entry["note"] = f"no CI: fewer than {MIN_SEEDS} seeds on {', '.join(few)}" if few else ""
        result[variant] = entry
    return result


def budget_order(agg: dict[str, dict]) -> list[str]:
    """The variants grouped by budget, the largest first (a variant whose core cells differ in budget after
    them), in the chapter's order within a group; the variants without an IQM last."""
    def key(variant):
        a = agg[variant]
        budgets = a.get("budgets", [])
        return ("iqm" not in a, len(budgets) != 1, -max(budgets, default=0), variant_key(variant))

    return sorted(agg, key=key)


def aggregate_table(agg: dict[str, dict]) -> list[str]:
    rows = []
    for variant in budget_order(agg):
        a = agg[variant]
        if "iqm" not in a:
            rows.append(["-", variant, a["note"], "-", "-"])
            continue
        texts = []
        for prefix in ("", "d4rl_"):
            if f"{prefix}iqm" not in a:
                texts.append("-")
            elif f"{prefix}low" in a:
                texts.append(f"{a[prefix + 'iqm']:.1f} {interval_text(a[prefix + 'low'], a[prefix + 'high'])}")
            else:
                texts.append(f"{a[prefix + 'iqm']:.1f} ({a['note']})")
        rows.append([a["budget"], variant, *texts, a["runs"]])
    return markdown_table(["updates", "variant", "IQM [95% CI], local", "IQM [95% CI], D4RL scale",
                           "seeds per core dataset"], rows)


AGGREGATE_LEGEND = ("Rows are grouped by the updates behind the scores, the largest budget first: compare rows "
                    "only within a group (a method at 8k updates is not ranked against one at 50k).")


def write_scores(table, head: list[str], pendulum_head: list[str], agg: dict, notes: list[str], builds: list[str],
                 out: Path, runs: Optional[list[RunRecord]] = None, plots: tuple[str, ...] = ()) -> None:
    """scores.md, scores.csv, aggregate.csv.  runs: for the reading of the longer-budget runs (dataset sizes);
    plots: the figures make_results draws beside (profiles.png, curves.png, curves-pendulum.png), linked here."""
    def number(x: float) -> str:
        return "" if math.isnan(x) else f"{x:.4f}"  # one seed: no std

    def both(stat: Stat) -> list[str]:
        local = [number(stat.mean), number(stat.std)]
        return local + ([number(stat.d4rl_mean), number(stat.d4rl_std)] if stat.has_d4rl else ["", ""])

    with open(out / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["suite", "variant", "dataset", "n_seeds", "seeds", "updates",
                         *[f"{which}_{x}" for which in WHICH for x in ("mean", "std", "d4rl_mean", "d4rl_std")]])
        for which_suite in (HEADLINE, PENDULUM):
            variants, datasets = grid(table, which_suite)
            for variant in variants:
                for dataset in datasets:
                    if (variant, dataset) not in table:
                        if which_suite == HEADLINE and variant in PLANNED and dataset in CORE:
                            writer.writerow([which_suite, variant, dataset, 0, "", "not run", *[""] * 12])
                        continue
                    cells = table[variant, dataset]
                    score = cells["score"]
                    writer.writerow([which_suite, variant, dataset, score.n, " ".join(map(str, score.seeds)),
                                     score.budget_text(), *[x for which in WHICH for x in both(cells[which])]])
    with open(out / "aggregate.csv", "w", newline="") as f:
        writer = csv.writer(f)
        keys = ("iqm", "low", "high", "d4rl_iqm", "d4rl_low", "d4rl_high")
        writer.writerow(["variant", "updates", "iqm", "ci_low", "ci_high", "d4rl_iqm", "d4rl_ci_low", "d4rl_ci_high",
                         "seeds_per_core_dataset", "note"])
        for variant in budget_order(agg):
            a = agg[variant]
            writer.writerow([variant, a.get("budget", ""), *(f"{a[k]:.4f}" if k in a else "" for k in keys),
                             a.get("runs", ""), a["note"]])

    lines = ["# Normalized scores", "", *[f"{line}  " for line in head], "", SCORE_LEGEND, "", d4rl_citation(), "",
             f"## Aggregate over the core datasets ({', '.join(CORE)})", "",
             "Interquartile mean of the scores over every (dataset, seed) run, with a stratified bootstrap "
             f"95% CI (rliable; seeds resampled within each dataset, {stats.REPS} resamples), on both scales. Only "
             f"variants with runs on all three core datasets have one, and its CI needs {MIN_SEEDS} seeds on each. "
             + AGGREGATE_LEGEND, "", *aggregate_table(agg)]
    figures = [f"{what}: [{name}]({name})" for name, what in (
        ("profiles.png", "performance profiles of the variants with runs on every core dataset (the fraction of "
                         "their (dataset, seed) scores above each threshold, ours and the peer in separate panels)"),
        ("curves.png", "learning curves on the core datasets")) if name in plots]
    if figures:
        lines += ["", "Plots: " + "; ".join(figures) + "."]
    for which_suite, suite_head in ((HEADLINE, []), (PENDULUM, pendulum_head)):
        if which_suite == PENDULUM and not any(suite(d) == PENDULUM for _, d in table):
            continue
        for which, title in (("score", "score (mean of the last 3 evaluations)"), ("last", "last evaluation"),
                             ("best", "best score (max over evaluations)")):
            lines += ["", f"## {which_suite}: {title}", ""]
            if suite_head and which == "score":
                lines += [*[f"{line}  " for line in suite_head], "", "Pendulum has no D4RL counterpart: local scale "
                          "only." + (" Learning curves: [curves-pendulum.png](curves-pendulum.png)."
                                     if "curves-pendulum.png" in plots else ""), ""]
            if which_suite == HEADLINE and which == "score" and runs:
                reading = longer_budget_reading(table, runs)
                lines += [reading, ""] if reading else []
            lines += suite_table(table, which_suite, which)
    if builds:
        lines += ["", "## Dataset builds", "", "The size of the local dataset each run read (its run.json): builds of "
                  "a collected dataset on two machines can differ (same recipe and behavior checkpoints, other "
                  "episodes).", "", *[f"- {line}" for line in builds]]
    if notes:
        lines += ["", "## Failed or unfinished runs", "", *[f"- {note}" for note in notes]]
    (out / "scores.md").write_text("\n".join(lines) + "\n")


def longer_budget_reading(table, runs: list[RunRecord]) -> str:
    """One sentence where the longer-budget runs (<method>_500k) are shown: how their scores stand against the same
    method at its sweep budget, and the passes over each dataset their updates make (updates x batch / transitions,
    from the dataset size the runs recorded), with the trajectories %BC keeps (ceil(frac x episodes))."""
    longer = [r for r in runs if r.variant.endswith(HALF_BUDGET) and r.evaluations]
    pairs = []  # (dataset, variant, its score, the method's score at its sweep budget, that budget)
    for variant, dataset in sorted({(r.variant, r.dataset) for r in longer}, key=lambda x: (dataset_key(x[1]),
                                                                                            variant_key(x[0]))):
        mine, base = cell(table, variant, dataset), cell(table, variant.removesuffix(HALF_BUDGET), dataset)
        if mine is not None and base is not None:
            pairs.append((dataset, variant, mine.mean, base.mean, max(base.budgets)))
    if not pairs:
        return ""
    below = [p for p in pairs if p[2] < p[3]]
    budget = steps_text(max(r.steps[-1] for r in longer))
    compared = "; ".join(
        f"on {dataset} {sum(p in below for p in mine)} of {len(mine)}: "
        + ", ".join(f"{v} {a:.1f} vs {b:.1f} at {steps_text(n)}" for _, v, a, b, n in mine)
        for dataset in dict.fromkeys(d for d, *_ in pairs) for mine in [[p for p in pairs if p[0] == dataset]])
    datasets = sorted({r.dataset for r in longer}, key=dataset_key)
    sizes = [text for text in (size_reading(d, [r for r in longer if r.dataset == d]) for d in datasets) if text]
    runs_per_cell = sorted({cell(table, v, d).n for d, v, *_ in pairs})
    seeds = "/".join(map(str, runs_per_cell)) + f" seed{'s' * (runs_per_cell != [1])} a cell"
    head = (f"The {budget}-update runs score below the same method at its sweep budget in {len(below)} of "
            f"{len(pairs)} cells ({compared})" if below else
            f"The {budget}-update runs against the same method at its sweep budget: {compared}")
    return (head + (f"; the likely reason is the size of the data: {'; '.join(sizes)}: many passes over few "
                    f"trajectories overfit them" if below and sizes else "")
            + f" (a reading of {seeds}, not a claim under results/protocol.md).")


def size_reading(dataset: str, runs: list[RunRecord]) -> str:
    """How big the dataset the runs read is, from the size they recorded: episodes and transitions, the passes over it
    their updates make, and the trajectories %BC keeps; "" when no run recorded the size."""
    size = next((r.dataset_size for r in runs if r.dataset_size), None)
    if size is None:
        return ""
    episodes, transitions = size
    updates = max(int(r.config.get("max_steps") or r.steps[-1]) for r in runs)
    batch = max(int(r.config.get("batch_size") or 0) for r in runs)
    text = f"{dataset} holds {episodes} episodes ({transitions} transitions)"
    if batch:
        text += f", so {steps_text(updates)} updates of batch {batch} are about " \
                f"{round(updates * batch / transitions)} passes over it"
    fracs = sorted({float(r.config["frac"]) for r in runs if "frac" in r.config})
    for frac in fracs:
        kept = max(1, math.ceil(frac * episodes))
        names = sorted({r.variant for r in runs if r.config.get("frac") is not None and float(r.config["frac"])
                        == frac})
        text += f", and {'/'.join(names)} trains on its best {plural(kept, 'trajectory')}".replace(
            "trajectorys", "trajectories")
    return text


def build_text(size: Optional[tuple[int, int]]) -> str:
    """A dataset build as the scores page lists it: (episodes, transitions) -> 'N episodes, M steps'."""
    return "not recorded (committed before runs recorded it)" if size is None else f"{size[0]} episodes, {size[1]} steps"


def dataset_builds(runs: list[RunRecord]) -> list[str]:
    """Per dataset with a recorded build: each build and its runs, then the runs that recorded none."""
    lines = []
    for dataset in sorted({r.dataset for r in runs if r.dataset_size}, key=dataset_key):
        counts = Counter(build_text(r.dataset_size) for r in runs if r.dataset == dataset)
        lines.append(f"{dataset}: " + "; ".join(f"{build}: {plural(n, 'run')}" for build, n in counts.items()))
    return lines


def problems(runs: list[RunRecord], roots: list[Path]) -> list[str]:
    """Failed runs (their error.txt's last line) and runs whose last evaluation is before max_steps."""
    found, failed = [], set()
    for root in roots:
        for error in sorted(root.rglob("error.txt")):
            parts = error.parent.relative_to(root).parts
            failed.add(parts)
            last = error.read_text().strip().splitlines()[-1:] or ["?"]
            found.append(f"{'/'.join(parts)}: failed: {last[0]}")
    for r in runs:
        target = r.config.get("max_steps")
        if (r.variant, *r.dataset.split("/"), f"seed{r.seed}") in failed:
            continue
        if not r.evaluations:
            found.append(f"{r.variant}/{r.dataset}/seed{r.seed}: no evaluation in its log")
        elif target is not None and r.steps[-1] < int(target):
            found.append(f"{r.variant}/{r.dataset}/seed{r.seed}: unfinished, last evaluation at update "
                         f"{r.steps[-1]} of {target} (its final score is that evaluation's)")
    return found
