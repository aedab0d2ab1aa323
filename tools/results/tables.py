"""The tables: scores (per dataset, and the aggregate IQM grouped by budget), ours beside the peer library,
the BC sanity runs, and the header every file starts with (runs, budget, device, date)."""

from __future__ import annotations

import csv
import datetime
import math
import re
from collections import Counter
from pathlib import Path
from typing import Optional

from . import stats
from .runs import (CORE, HALF_BUDGET, HEADLINE, PENDULUM, PEERS, PLANNED, PROJECT, RunRecord, d4rl_citation,
                   dataset_key, env_of, kind, plural, steps_text, suite, variant_key)
from .stats import MIN_SEEDS, WHICH, Stat, cell, interval_text, iqm_interval, welch_interval

CLOSE = 10.0  # normalized-score points: the sanity runs' tolerance


def cell_text(stat: Optional[Stat]) -> str:
    return stat.both_text() if stat is not None else "not run"


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; a "|" inside a cell (|G|) is escaped."""
    line = lambda cells: "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"  # noqa: E731
    return [line(head), "|" + "---|" * len(head), *[line(r) for r in rows]]


def grid(table, which_suite: str) -> tuple[list[str], list[str]]:
    """Rows (variants) and columns (datasets) of a suite's table: for MuJoCo the planned grid (the core
    datasets and PLANNED variants, run or not) plus whatever else ran; for the others what ran."""
    ran = [(v, d) for v, d in table if suite(d) == which_suite]
    planned = which_suite == HEADLINE
    variants = sorted({v for v, _ in ran} | (set(PLANNED) if planned else set()), key=variant_key)
    datasets = sorted({d for _, d in ran} | (set(CORE) if planned else set()), key=dataset_key)
    return variants, datasets


def suite_table(table, which_suite: str, which: str = "score", datasets: Optional[list[str]] = None) -> list[str]:
    variants, all_datasets = grid(table, which_suite)
    datasets = all_datasets if datasets is None else datasets
    variants = [v for v in variants if v in PLANNED or any((v, d) in table for d in datasets)]
    rows = [[v, *[cell_text(table[v, d][which]) if (v, d) in table else "not run" for d in datasets]]
            for v in variants]
    return markdown_table(["variant", *datasets], rows)


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
        lines += ["", "## Dataset builds", "", "The size of the local dataset each run read (dataset.txt): builds of "
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
    sizes = []
    for dataset in sorted({r.dataset for r in longer}, key=dataset_key):
        mine = [r for r in longer if r.dataset == dataset]
        found = next((re.search(r"(\d+) episodes, (\d+) (?:steps|transitions)", r.dataset_build) for r in mine
                      if r.dataset_build), None)
        if not found:
            continue
        episodes, transitions = int(found[1]), int(found[2])
        updates = max(int(r.config.get("max_steps") or r.steps[-1]) for r in mine)
        batch = max(int(r.config.get("batch_size") or 0) for r in mine)
        text = f"{dataset} holds {episodes} episodes ({transitions} transitions)"
        if batch:
            text += f", so {steps_text(updates)} updates of batch {batch} are about " \
                    f"{round(updates * batch / transitions)} passes over it"
        fracs = sorted({float(r.config["frac"]) for r in mine if "frac" in r.config})
        for frac in fracs:
            kept = max(1, math.ceil(frac * episodes))
            names = sorted({r.variant for r in mine if r.config.get("frac") is not None and float(r.config["frac"])
                            == frac})
            text += f", and {'/'.join(names)} trains on its best {plural(kept, 'trajectory')}".replace(
                "trajectorys", "trajectories")
        sizes.append(text)
    runs_per_cell = sorted({cell(table, v, d).n for d, v, *_ in pairs})
    seeds = "/".join(map(str, runs_per_cell)) + f" seed{'s' * (runs_per_cell != [1])} a cell"
    head = (f"The {budget}-update runs score below the same method at its sweep budget in {len(below)} of "
            f"{len(pairs)} cells ({compared})" if below else
            f"The {budget}-update runs against the same method at its sweep budget: {compared}")
    return (head + (f"; the likely reason is the size of the data: {'; '.join(sizes)}: many passes over few "
                    f"trajectories overfit them" if below and sizes else "")
            + f" (a reading of {seeds}, not a claim under results/protocol.md).")


def dataset_builds(runs: list[RunRecord]) -> list[str]:
    """Per dataset with a recorded build: each build and its runs, then the runs that recorded none."""
    lines = []
    for dataset in sorted({r.dataset for r in runs if r.dataset_build}, key=dataset_key):
        mine = [r for r in runs if r.dataset == dataset]
        counts = Counter(r.dataset_build or "not recorded (committed before runs recorded it)" for r in mine)
        lines.append(f"{dataset}: " + "; ".join(f"{build}: {plural(n, 'run')}" for build, n in counts.items()))
    return lines


# --- the peer library beside ours


def peer_rows(table) -> list[dict]:
    """One row per (algorithm with a peer, dataset): the core datasets, and any other the peer ran on."""
    rows = []
    for ours, peer in PEERS.items():
        datasets = sorted({d for v, d in table if v == peer} | set(CORE), key=dataset_key)
        for dataset in datasets:
            a, b = cell(table, ours, dataset), cell(table, peer, dataset)
            row = {"algorithm": ours, "dataset": dataset, "ours": a, "peer": b, "difference": None}
            if a is not None and b is not None and min(a.n, b.n) >= MIN_SEEDS:
                row["difference"] = welch_interval(a.values, b.values)
            rows.append(row)
    return rows


def difference_text(row: dict) -> str:
    a, b = row["ours"], row["peer"]
    if a is None or b is None:
        return "-"
    if row["difference"] is None:
        return f"{a.mean - b.mean:+.1f} (no interval: {MIN_SEEDS} seeds a side needed)"
    diff, low, high = row["difference"]
    return f"{diff:+.1f} {interval_text(low, high)}"


def peer_table(rows: list[dict]) -> list[str]:
    return markdown_table(["algorithm", "dataset", "ours", "peer (d3rlpy)", "ours - peer [95% CI], local"],
                          [[r["algorithm"], r["dataset"], cell_text(r["ours"]), cell_text(r["peer"]),
                            difference_text(r)] for r in rows])


def write_peer(rows: list[dict], head: list[str], out: Path) -> None:
    with open(out / "peer.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["algorithm", "dataset", "ours_n", "ours_mean", "ours_std", "ours_d4rl_mean", "peer_n",
                         "peer_mean", "peer_std", "peer_d4rl_mean", "difference", "ci_low", "ci_high"])
        for r in rows:
            sides = [(s.n, f"{s.mean:.4f}", "" if s.n < 2 else f"{s.std:.4f}",
                      f"{s.d4rl_mean:.4f}" if s.has_d4rl else "") if s else (0, "", "", "")
                     for s in (r["ours"], r["peer"])]
            difference = [f"{x:.4f}" for x in r["difference"]] if r["difference"] else ["", "", ""]
            writer.writerow([r["algorithm"], r["dataset"], *sides[0], *sides[1], *difference])
    lines = ["# Ours beside the peer library (d3rlpy)", "", *[f"{line}  " for line in head], "",
             "The same local Minari datasets, budget, seeds, evaluation episodes and normalization (the peer runs "
             "tools/peer_d3rlpy.py in its own environment). Each cell: the score (a run's mean over its last 3 "
             "evaluations), mean ± sample std over seeds, local / D4RL scale (n, updates). The difference of means "
             "(local scale) has a 95% Welch t interval; an interval containing 0 means the two are not told apart "
             "by these seeds. The peer's hyperparameters are d3rlpy's D4RL reproduction "
             "scripts, with the exceptions listed in tools/peer_d3rlpy.py: BC (no script) takes our batch and "
             "learning rate, and BCQ samples 10 actions per next state in the target and 100 when acting, as the "
             "authors' code and our bcq. One difference inside d3rlpy's method: its CQL target scores the next "
             "state at the mean action tanh(mu(s')) (cql_impl.py, _compute_deterministic_target), where the "
             "authors' code and our cql sample a' ~ pi(.|s') (the variant cql_mean_target takes the peer's "
             "choice). And one in ours: dt starts its timestep embedding as GPT-2 starts its position embedding "
             "(std 0.02, as d3rlpy does), where the authors' code keeps nn.Embedding's N(0, 1); the authors' start "
             "is the variant dt_init1 in scores.md.", "", d4rl_citation(), "", *peer_table(rows)]
    (out / "peer.md").write_text("\n".join(lines) + "\n")


# --- the sanity table: bc on expert data scores about 100, on random data about 0


def write_sanity(table, head: list[str], out: Path) -> list[str]:
    envs = sorted({env_of(d) for v, d in table if v == "bc" and kind(d) in ("expert", "random")})
    lines = ["# Sanity: BC on expert and random data", "", *[f"{line}  " for line in head], "",
             "BC imitating the expert policy should score about 100 and imitating the uniform random policy about "
             "0 on the local scale: the normalization (ref_max_score, ref_min_score of the local datasets) and the "
             "evaluation agree with the data. Not a test: a reading of the runs (one seed each), shown as this "
             "table rather than as learning curves. The D4RL scale beside it shows where this project's expert "
             "and random policies sit against D4RL's.", "", d4rl_citation(), ""]
    if not envs:
        lines.append("Not run: no bc run on a local/<env>/expert-v0 or random-v0 dataset (python -m tools.sweep "
                     "--variants bc --datasets local/hopper/expert-v0 local/hopper/random-v0 ... --commit-dir "
                     "results/runs).")
    rows = []
    for env in envs:
        row = [env]
        for k, target in (("expert", 100.0), ("random", 0.0)):
            dataset = next((d for v, d in table if v == "bc" and env_of(d) == env and kind(d) == k), None)
            stat = cell(table, "bc", dataset) if dataset else None
            if stat is None:
                row += ["not run", "-"]
            else:
                off = abs(stat.mean - target)
                row += [cell_text(stat), f"{off:.1f} points from {target:g} "
                                         f"({'within' if off <= CLOSE else 'MORE than'} {CLOSE:g})"]
        rows.append(row)
    if rows:
        lines += markdown_table(["environment", "bc on expert-v0", "vs 100", "bc on random-v0", "vs 0"], rows)
    (out / "sanity.md").write_text("\n".join(lines) + "\n")
    return lines


# --- headers and problems


def display(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def header(runs: list[RunRecord], commands: list[str], roots: list[Path], reproduce: str) -> list[str]:
    """Runs, budget, device, date: the lines every table, plot and the README start with; the offline runs' budgets,
    and apart from them the offline-to-online runs' (offline updates, 0 for a learner from scratch, then online
    environment steps).  commands: the sweep commands that made the runs, listed in the file reproduce when there
    are several."""
    from tools.processes import machine_description

    def values(name, group):
        found = sorted({str(r.config[name]) for r in group if name in r.config}, key=lambda x: (len(x), x))
        return ", ".join(found) or "unknown"

    def finals(group):
        return ", ".join(steps_text(s) for s in sorted({r.steps[-1] for r in group if r.evaluations})) or "-"

    seeds = sorted({r.seed for r in runs})
    offline, online = split_online(runs)
    devices = set()
    for r in runs:
        device = str(r.config.get("device", "auto"))
        if device == "auto" and r.machine:
            device = "cuda" if "no GPU" not in r.machine else "cpu"
        devices.add(f"{device} on {r.machine}" if r.machine else device)
    device = "; ".join(sorted(devices)) if devices else "unknown"
    if runs and all(not r.machine for r in runs):
        device += f" (runs did not record their machine; this machine: {machine_description()})"
    logs = f"logs in {', '.join(f'`{display(root)}`' for root in roots)}"
    unknown = sum(not r.command for r in runs)
    made = (f"made by `{commands[0]}`" if len(commands) == 1 else
            f"made by the {len(commands)} sweep commands in `{reproduce}`" if commands else "made by commands unknown")
    made += f" ({plural(unknown, 'run')} without a run.json not among them)" if unknown and commands else ""
    return [
        f"Runs: {plural(len(runs), 'run')}, {made} ({logs}).",
        *([f"Budget: {values('max_steps', offline)} updates per offline run (final evaluation at {finals(offline)}); "
           f"evaluation every {values('eval_every', offline)} updates, {values('eval_episodes', offline)} episode(s); "
           f"seeds {', '.join(map(str, seeds)) or '-'}."] if offline or not online else []),
        *([online_budget(online, values, finals) + ("" if offline else f"; seeds {', '.join(map(str, seeds))}") + "."]
          if online else []),
        f"Device: {device}.",
        f"Made by `python -m tools.make_results` on {datetime.date.today().isoformat()}.",
    ]


def split_online(runs: list[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """The offline runs and the offline-to-online ones (online_steps > 0 in their config)."""
    def steps(r):
        try:
            return int(r.config.get("online_steps") or 0)
        except (TypeError, ValueError):
            return 0

    return [r for r in runs if steps(r) == 0], [r for r in runs if steps(r) > 0]


def online_budget(online: list[RunRecord], values, finals) -> str:
    """The fine-tuning runs' budget, apart from the offline runs': offline updates (0: online only, named), then
    online environment steps; their final evaluation at offline + online updates."""
    scratch = sorted({r.variant for r in online if int(r.config.get("max_steps") or 0) == 0}, key=variant_key)
    pretrained = [r for r in online if r.variant not in scratch]
    offline = (f"{values('max_steps', pretrained)} offline updates" if pretrained else "")
    if scratch:
        offline += (" (or " if offline else "") + f"0 for {', '.join(scratch)}, which learn online only, from scratch" \
            + (")" if pretrained else "")
    return (f"Offline-to-online runs (results/o2o.md): {offline}, then {values('online_steps', online)} online "
            f"environment steps (final evaluation at update {finals(online)}: offline plus online updates); "
            f"evaluation every {values('eval_every', online)} updates")


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
