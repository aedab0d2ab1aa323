"""The chapter's claims on MuJoCo, each decided on 95% intervals (PASS / FAIL, NOT RUN when runs are absent or
too few), with the numbers behind each verdict and one sentence reading them: results/claims.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import stats
from .reproduce import full_budget
from .runs import (CORE, CORE_MEDIUM_REPLAY, HOPPER_MEDIUM_EXPERT, HOPPER_MEDIUM_REPLAY, DISCOUNTED_RETURN,
                   LEGACY_DISCOUNTED_RETURN, PEERS, Q_INITIAL, TARGET_KEYS, RunRecord, dataset_name, plural,
                   steps_text)
from .stats import MIN_SEEDS, Stat, cell, difference_interval, interval_text, mean_interval, score_table
from .o2o import EARLY, O2O_DATASETS, claim_calibration, claim_pretraining_pays
from .tables import CLOSE, markdown_table

TD_METHODS = ["td3_bc", "iql", "cql", "bcq", "mopo", "combo"]
FAR = 0.5  # "far above": the CI of Q - G lies above FAR abs(G), i.e. Q at least 1.5 times a positive return
# Claim 8b, stated before its runs (issue 33): narrow data, 3 seeds of td3_bc and td3_nobc each at 50k updates.
NARROW = ["local/walker2d/medium-expert-v0", "local/halfcheetah/expert-v0"]
PREREGISTERED_SEEDS, PREREGISTERED_BUDGET = 3, 50_000
FEW = 3  # with fewer seeds than this a wide interval reads as "too few seeds"
PLATEAU = 2.0  # points: two curves this close are on the same plateau


@dataclass
class Part:
    """One decided (or undecided) piece of a claim: ok is True, False, or None (missing); line is its numbers.
    A comparison a - b on a dataset keeps its cells and interval for the reading."""
    ok: Optional[bool]
    line: str
    a: str = ""
    b: str = ""
    dataset: str = ""
    sa: Optional[Stat] = None
    sb: Optional[Stat] = None
    diff: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None


@dataclass
class Claim:
    label: str
    short: str
    text: str
    verdict: str = ""
    lines: list[str] = field(default_factory=list)
    reading: str = ""


def decide(parts: list[Part]) -> tuple[str, list[str]]:
    """FAIL when a decided part fails; otherwise NOT RUN when a part is missing (or there is none); else PASS."""
    results = [p.ok for p in parts]
    verdict = "FAIL" if False in results else "NOT RUN" if None in results or not results else "PASS"
    return verdict, [p.line for p in parts]


def missing_seeds(table, variants: list[str], dataset: str, need: int = MIN_SEEDS) -> Optional[str]:
    """Why the cells cannot give an interval (a variant not run, or fewer than need seeds), or None."""
    reasons = []
    for v in variants:
        stat = cell(table, v, dataset)
        if stat is None:
            reasons.append(f"{v} not run on {dataset}")
        elif stat.n < need:
            reasons.append(f"{v} has {plural(stat.n, 'seed')} on {dataset} "
                           f"({'an interval needs' if need == MIN_SEEDS else 'the claim needs'} {need})")
    return "; ".join(reasons) or None


def greater(table, a: str, b: str, dataset: str, need: int = MIN_SEEDS) -> Part:
    """a > b on dataset: the 95% CI of mean(a) - mean(b) lies above 0."""
    missing = missing_seeds(table, [a, b], dataset, need)
    sa, sb = cell(table, a, dataset), cell(table, b, dataset)
    if missing:
        return Part(None, f"{dataset}: {a} > {b}: missing: {missing}.", a, b, dataset, sa, sb)
    diff, low, high = difference_interval(sa.values, sb.values)
    ok = low > 0
    return Part(ok, f"{dataset}: {a} {sa.text()} - {b} {sb.text()} = {diff:+.1f}, 95% CI {interval_text(low, high)}: "
                    f"{'above 0, supports' if ok else 'not above 0, does not support'} {a} > {b}.",
                a, b, dataset, sa, sb, diff, low, high)


def shown_not_decided(table, a: str, b: str, dataset: str) -> str:
    """The line of a method with too few seeds for an interval, beside methods that decide the claim."""
    sa, sb = cell(table, a, dataset), cell(table, b, dataset)
    difference = f" - {b} {sb.text()} = {sa.mean - sb.mean:+.1f}" if sb else ""
    return (f"{dataset}: {a} {sa.text()}{difference}: {plural(sa.n, 'seed')}, shown, not decided (an interval "
            f"needs {MIN_SEEDS}).")


def target_scores(record: dict) -> dict[float, float]:
    """DT's normalized score per conditioning target in one evaluation record."""
    found = {}
    for key, value in record.items():
        for pattern in TARGET_KEYS:
            match = pattern.match(key)
            if match:
                try:
                    found[float(match["target"])] = value
                except ValueError:
                    pass
    return found


def q_and_return(run: RunRecord) -> Optional[tuple[float, float, int]]:
    """(Q(s0, pi(s0)), discounted Monte Carlo return, step) at the run's last evaluation that logged both."""
    for record in reversed(run.evaluations):
        g = record.get(DISCOUNTED_RETURN, record.get(LEGACY_DISCOUNTED_RETURN))
        if Q_INITIAL in record and g is not None:
            return record[Q_INITIAL], g, record["step"]
    return None


def q_gaps(runs, variant: str, dataset: str, need: int = MIN_SEEDS
           ) -> tuple[list[tuple[int, float, float, int]], Optional[str]]:
    """[(seed, Q, G, step)] of the variant's runs on the dataset, and why they are not enough (or None)."""
    mine = [r for r in runs if r.variant == variant and r.dataset == dataset and r.evaluations]
    found = [(r.seed, *q) for r in mine if (q := q_and_return(r)) is not None]
    if not mine:
        return found, f"{variant} not run on {dataset}"
    if len(found) < len(mine):
        return found, (f"{len(mine) - len(found)} of {plural(len(mine), variant + ' seed')} on {dataset} logged no "
                       f"{Q_INITIAL} and {DISCOUNTED_RETURN}")
    if len(found) < need:
        return found, (f"{variant} has {plural(len(found), 'seed')} on {dataset} "
                       f"({'an interval needs' if need == MIN_SEEDS else 'the claim needs'} {need})")
    return found, None


def seed_lines(found) -> str:
    return "; ".join(f"seed {seed}: Q = {q:.1f}, G = {g:.1f} (update {steps_text(step)})" for seed, q, g, step in found)


def still_rising(runs, variant: str, dataset: str) -> Optional[list[tuple[float, float, float]]]:
    """(first, second-to-last, last) Q(s0, pi(s0)) per seed when it rose between the last two evaluations of
    every seed (a critic still converging from its initial values lies below the return without testing the
    bound), else None."""
    found = []
    for run in (r for r in runs if r.variant == variant and r.dataset == dataset):
        logged = [record[Q_INITIAL] for record in run.evaluations if Q_INITIAL in record]
        if len(logged) < 2 or logged[-1] <= logged[-2]:
            return None
        found.append((logged[0], logged[-2], logged[-1]))
    return found or None


def overestimation(runs, table, variant: str, dataset: str, need: int = MIN_SEEDS) -> Part:
    """variant overestimates on dataset: the CI of Q(s0, pi(s0)) - G lies above FAR abs(mean G)."""
    found, missing = q_gaps(runs, variant, dataset, need)
    if missing:
        shown = f" Shown, not decided: {seed_lines(found)}." if found else ""
        return Part(None, f"{dataset}: {variant} overestimates: missing: {missing}.{shown}", variant, "", dataset)
    gaps = [q - g for _, q, g, _ in found]
    threshold = FAR * abs(float(np.mean([g for _, _, g, _ in found])))
    diff, low, high = mean_interval(gaps)
    ok = low > threshold
    reference = ""
    bc_found, bc_missing = q_gaps(runs, "td3_bc", dataset, need)
    if variant == "td3_nobc" and bc_found and not bc_missing:
        reference = f" (td3_bc for reference: mean Q - G = {np.mean([q - g for _, q, g, _ in bc_found]):+.1f})"
    return Part(ok, f"{dataset}: {variant} Q(s0, pi(s0)) vs G per seed: {seed_lines(found)}; mean Q - G = {diff:+.1f}, "
                    f"95% CI {interval_text(low, high)}, far above means above {FAR:g} abs(G) = {threshold:.1f}: "
                    f"{'supports' if ok else 'does not support'} the overestimation{reference}.",
                variant, "", dataset, None, None, diff, low, high)


# --- the claims: each returns (verdict, lines, reading)


def claim_td_beats_bc(table, runs):
    parts = []
    for dataset in CORE_MEDIUM_REPLAY:
        ran = [m for m in TD_METHODS if cell(table, m, dataset)]
        if not ran:
            parts.append(Part(None, f"{dataset}: missing: no TD method ({', '.join(TD_METHODS)}) run."))
        decided = [m for m in ran if cell(table, m, dataset).n >= MIN_SEEDS] or ran
        parts += [greater(table, method, "bc", dataset) for method in decided]
        parts += [Part(True, shown_not_decided(table, method, "bc", dataset)) for method in ran if method not in decided]
        if ran and len(ran) < len(TD_METHODS):
            parts.append(Part(True, f"{dataset}: not run (decided without them): "
                                    f"{', '.join(m for m in TD_METHODS if m not in ran)}."))
    verdict, lines = decide(parts)
    return verdict, lines, read_td_beats_bc(verdict, parts, table, runs)


def claim_filtering_helps(table, runs):
    parts = [greater(table, "bc_10", "bc", dataset) for dataset in CORE_MEDIUM_REPLAY]
    verdict, lines = decide(parts)
    if verdict == "PASS":
        reading = (f"Supported with wide margins: bc_10 leads bc by {and_list(f'{p.diff:+.1f}' for p in parts)} points "
                   f"({seeds_and_budgets(parts)}), and plain bc, which copies the whole mixture, scores only "
                   f"{and_list(f'{p.sb.mean:.1f}' for p in parts)}: filtering is what makes BC work on mixed data, "
                   "as the chapter says.")
    else:
        reading = comparison_reading(verdict, parts)
    return verdict, lines, reading


def claim_dt_between(table, runs):
    parts = []
    missing = missing_seeds(table, ["dt", "bc_10"], HOPPER_MEDIUM_EXPERT)
    dt, bc_10 = cell(table, "dt", HOPPER_MEDIUM_EXPERT), cell(table, "bc_10", HOPPER_MEDIUM_EXPERT)
    if missing:
        parts.append(Part(None, f"{HOPPER_MEDIUM_EXPERT}: dt close to bc_10: missing: {missing}."))
    else:
        diff, low, high = difference_interval(dt.values, bc_10.values)
        ok = -CLOSE <= low and high <= CLOSE
        parts.append(Part(ok, f"{HOPPER_MEDIUM_EXPERT}: dt {dt.text()} - bc_10 {bc_10.text()} = {diff:+.1f}, 95% CI "
                              f"{interval_text(low, high)}: {'inside' if ok else 'not inside'} ±{CLOSE:g}, "
                              f"{'supports' if ok else 'does not support'} dt close to %BC.",
                          "dt", "bc_10", HOPPER_MEDIUM_EXPERT, dt, bc_10, diff, low, high))
    for dataset in CORE_MEDIUM_REPLAY:
        ran = [m for m in TD_METHODS if cell(table, m, dataset) and cell(table, m, dataset).n >= MIN_SEEDS]
        if not ran:
            parts.append(Part(None, f"{dataset}: dt below the best TD method: missing: no TD method with "
                                    f"{MIN_SEEDS} seeds."))
            continue
        best = max(ran, key=lambda m: cell(table, m, dataset).mean)
        part = greater(table, best, "dt", dataset)
        part.line = part.line.replace(f"{dataset}: ", f"{dataset}: best TD method {best}: ", 1)
        parts.append(part)
    verdict, lines = decide(parts)
    return verdict, lines, read_dt_between(verdict, parts, table)


def claim_dt_conditioning(table, runs):
    parts = []
    for dataset in CORE:
        dt_runs = [r for r in runs if r.variant == "dt" and r.dataset == dataset and r.evaluations]
        if not dt_runs:
            continue
        per_seed = [target_scores(r.final) for r in dt_runs]
        targets = sorted(set.intersection(*(set(s) for s in per_seed)))
        if len(targets) < 2 or len(dt_runs) < MIN_SEEDS:
            parts.append(Part(None, f"{dataset}: missing: {plural(len(dt_runs), 'dt seed')} with "
                                    f"{plural(len(targets), 'common target')} (eval/target_<R>/normalized_score); "
                                    f"{MIN_SEEDS} seeds and 2 targets needed."))
            continue
        low_t, high_t = targets[0], targets[-1]
        rises = [s[high_t] - s[low_t] for s in per_seed]
        diff, low, high = mean_interval(rises)
        means = ", ".join(f"R_hat_1 = {t:g}: {np.mean([s[t] for s in per_seed]):.1f}" for t in targets)
        ok = low > 0
        parts.append(Part(ok, f"{dataset}: dt's mean score per target: {means}; score at {high_t:g} - score at "
                              f"{low_t:g}, per seed ({len(rises)} seeds): {diff:+.1f}, 95% CI {interval_text(low, high)}: "
                              f"{'above 0, supports' if ok else 'not above 0, does not support'} the claim.",
                          "dt", "", dataset, cell(table, "dt", dataset), None, diff, low, high))
    if not parts:
        parts.append(Part(None, f"missing: dt not run on any core dataset ({', '.join(CORE)})."))
    verdict, lines = decide(parts)
    decided = [p for p in parts if p.diff is not None]
    if verdict == "PASS":
        stat = decided[0].sa
        reading = (f"Supported on {plural(len(decided), 'core dataset')} even at {budget_phrase('dt', decided[0].dataset, stat)} "
                   f"with {plural(min(p.sa.n for p in decided), 'seed')}: the higher target raises the score by "
                   f"{min(p.diff for p in decided):.1f} to {max(p.diff for p in decided):.1f} points.")
    else:
        reading = comparison_reading(verdict, parts, what="the higher target's gain")
    return verdict, lines, reading


def claim_cql_lower_bound(table, runs):
    parts, few, rising = [], [], {}
    for dataset in CORE:
        if not any(r.variant == "cql" and r.dataset == dataset for r in runs):
            continue
        found, missing = q_gaps(runs, "cql", dataset)
        evaluated = sum(r.variant == "cql" and r.dataset == dataset and bool(r.evaluations) for r in runs)
        if 0 < len(found) == evaluated < MIN_SEEDS:  # every seed logged Q and G, but too few seeds
            few.append((dataset, found, missing))
            continue
        if missing:
            parts.append(Part(None, f"{dataset}: missing: {missing}."))
            continue
        gaps = [q - g for _, q, g, _ in found]
        diff, low, high = mean_interval(gaps)
        ok = all(gap < 0 for gap in gaps) and high < 0
        rise = still_rising(runs, "cql", dataset)
        note = ""
        if rise:
            rising[dataset] = (rise, found)
            note = (f" Q(s0, pi(s0)) was still rising at the final evaluation on every seed (first, last two: "
                    f"{'; '.join(f'{a:.1f} -> {b:.1f} -> {c:.1f}' for a, b, c in rise)}): the critic had not "
                    "converged, so this budget tests the bound only weakly.")
        parts.append(Part(ok, f"{dataset}: Q(s0, pi(s0)) - G per seed at the final evaluation: {seed_lines(found)}; "
                              f"mean Q - G = {diff:+.1f}, 95% CI {interval_text(low, high)}: "
                              f"{'every seed below, supports' if ok else 'not every seed below, does not support'} "
                              f"the lower bound.{note}", "cql", "", dataset, cell(table, "cql", dataset), None,
                          diff, low, high))
    for dataset, found, missing in few:  # decided on the other datasets when they have the seeds
        below = all(q < g for _, q, g, _ in found)
        parts.append(Part(True if parts else None,
                          f"{dataset}: Q(s0, pi(s0)) - G per seed at the final evaluation: {seed_lines(found)}: "
                          f"{'below' if below else 'not below'} G; {missing}: shown, not decided."))
    if not parts:
        parts.append(Part(None, f"missing: cql not run on any core dataset ({', '.join(CORE)})."))
    verdict, lines = decide(parts)
    return verdict, lines, read_cql_lower_bound(verdict, parts, rising)


def claim_mopo_penalty(table, runs):
    parts = [greater(table, "mopo", "mopo_nopen", HOPPER_MEDIUM_REPLAY)]
    verdict, lines = decide(parts)
    return verdict, lines, comparison_reading(verdict, parts)


def claim_iql_beats_awr(table, runs):
    parts = [greater(table, "iql", "awr", dataset) for dataset in CORE_MEDIUM_REPLAY]
    verdict, lines = decide(parts)
    return verdict, lines, comparison_reading(verdict, parts)


def extrapolation_parts(table, runs, datasets: list[str], need: int = MIN_SEEDS) -> list[Part]:
    parts = []
    for dataset in datasets:
        parts.append(overestimation(runs, table, "td3_nobc", dataset, need))
        parts.append(greater(table, "td3_bc", "td3_nobc", dataset, need))
    return parts


def claim_extrapolation_error(table, runs):
    parts = extrapolation_parts(table, runs, CORE_MEDIUM_REPLAY)
    verdict, lines = decide(parts)
    return verdict, lines, read_extrapolation(verdict, parts, table, runs)


def claim_narrow_extrapolation(table, runs):
    """Claim 8b as pre-registered: only runs at PREREGISTERED_BUDGET updates count, PREREGISTERED_SEEDS a side."""
    counted = [r for r in runs if r.evaluations and r.budget == PREREGISTERED_BUDGET]
    parts = extrapolation_parts(score_table(counted), counted, NARROW, PREREGISTERED_SEEDS)
    others = sorted({f"{r.variant} seed {r.seed} on {r.dataset} ({steps_text(r.budget)})" for r in runs
                     if r.evaluations and r.dataset in NARROW and r.variant in ("td3_bc", "td3_nobc")
                     and r.budget != PREREGISTERED_BUDGET})
    verdict, lines = decide(parts)
    if others:
        lines.append(f"Not counted (not at the pre-registered {steps_text(PREREGISTERED_BUDGET)} updates): "
                     f"{', '.join(others)}.")
    return verdict, lines, read_narrow(verdict, parts, score_table(counted), counted)


# --- readings: one sentence each, from the numbers above


def points(x: float) -> str:
    """x with one decimal, without a minus sign on a zero."""
    text = f"{x:.1f}"
    return "0.0" if text == "-0.0" else text


def and_list(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def seeds_and_budgets(parts: list[Part]) -> str:
    seeds = sorted({s.n for p in parts for s in (p.sa, p.sb) if s})
    budgets = sorted({b for p in parts for s in (p.sa, p.sb) if s for b in s.budgets})
    return (f"{'-'.join(map(str, (seeds[0], seeds[-1])) if len(seeds) > 1 else map(str, seeds))} seeds a side at "
            f"{', '.join(map(steps_text, budgets))} updates")


def budget_phrase(variant: str, dataset: str, stat: Stat) -> str:
    """'10k updates (1% of its config's full 1M)'."""
    full = full_budget(variant, dataset)
    top = max(stat.budgets)
    return f"{stat.budget_text()} updates ({100 * top / full:.0f}% of its config's full {steps_text(full)})"


def mean_curve(runs, variant: str, dataset: str) -> dict[int, float]:
    by_step: dict[int, list[float]] = {}
    for run in runs:
        if run.variant == variant and run.dataset == dataset:
            for step, score in zip(run.steps, run.scores):
                by_step.setdefault(step, []).append(score)
    return {step: float(np.mean(v)) for step, v in sorted(by_step.items())}


def shared_plateau(runs, a: str, b: str, dataset: str) -> Optional[int]:
    """The last update up to which the mean curves of a and b stay within PLATEAU points of each other
    (None when they differ from the first common evaluation on, or never part)."""
    ca, cb = mean_curve(runs, a, dataset), mean_curve(runs, b, dataset)
    common = [s for s in ca if s in cb]
    last = None
    for step in common:
        if abs(ca[step] - cb[step]) > PLATEAU:
            return last
        last = step
    return None


def why_not(part: Part) -> str:
    """What a failed comparison a - b reads as: unequal budgets, too few seeds, or a real disagreement."""
    sa, sb = part.sa, part.sb
    if sa is None or sb is None:  # a one-sample interval (Q - G, a target's gain)
        return f"interval {interval_text(part.low, part.high)}"
    if max(sa.budgets) != max(sb.budgets):
        return f"unequal budgets ({part.a} {sa.budget_text()}, {part.b} {sb.budget_text()} updates)"
    n = min(sa.n, sb.n)
    if part.high < 0:
        return ("a real disagreement with the chapter" if n >= FEW else
                f"the opposite of the chapter on {plural(n, 'seed')} a side, too few to be sure")
    if -CLOSE <= part.low and part.high <= CLOSE:
        return (f"no difference (the interval {interval_text(part.low, part.high)} lies within ±{CLOSE:g}): "
                + ("a real disagreement with the chapter" if n >= FEW else f"{plural(n, 'seed')} a side"))
    wide = sa if sa.std >= sb.std else sb
    who = part.a if wide is sa else part.b
    return (f"too few seeds: {who}'s {plural(wide.n, 'seed')} spread widely ({wide.mean:.1f} ± {wide.std:.1f}) and the "
            f"interval {interval_text(part.low, part.high)} includes 0")


def missing_reading(parts: list[Part]) -> str:
    missing = [p.line.split("missing: ", 1)[-1].rstrip(".") for p in parts if p.ok is None]
    return f"Not decided yet: {'; '.join(dict.fromkeys(missing))}."


def comparison_reading(verdict: str, parts: list[Part], what: str = "") -> str:
    """The generic sentence of a claim made of comparisons: which hold, and why the others do not."""
    if verdict == "NOT RUN":
        return missing_reading(parts)
    held = [p for p in parts if p.ok and p.diff is not None]
    failed = [p for p in parts if p.ok is False]
    label = lambda p: f"{p.a} - {p.b}" if p.b else (what or p.a)  # noqa: E731
    if verdict == "PASS":
        return (f"Supported: {and_list(f'{label(p)} = {p.diff:+.1f} on {dataset_name(p.dataset)}' for p in held)} "
                f"({seeds_and_budgets(held)}).")
    clauses = [f"{label(p)} = {p.diff:+.1f} on {dataset_name(p.dataset)}, {why_not(p)}" for p in failed]
    holds = f"It holds on {and_list(dataset_name(p.dataset) for p in held)} ({and_list(f'{p.diff:+.1f}' for p in held)}); " \
        if held else ""
    real = any("real disagreement" in c for c in clauses)
    return (f"{holds}{'; '.join(clauses)}: "
            f"{'a disagreement with the chapter at this budget' if real else 'not a disagreement with the chapter yet'}.")


def read_td_beats_bc(verdict: str, parts: list[Part], table, runs) -> str:
    if verdict != "FAIL":
        return comparison_reading(verdict, parts)
    held = [p for p in parts if p.ok and p.diff is not None]
    clauses = []
    for p in (p for p in parts if p.ok is False):
        clause = (f"{p.a} on {dataset_name(p.dataset)} {'is level with' if plateau_like(p) else 'does not beat'} bc "
                  f"({p.sa.mean:.1f} vs {p.sb.mean:.1f}) after {budget_phrase(p.a, p.dataset, p.sa)}")
        peer = cell(table, PEERS.get(p.a, ""), p.dataset)
        if peer is not None:
            plateau = shared_plateau(runs, p.a, PEERS[p.a], p.dataset)
            clause += (f", while the peer's {p.a} reaches {peer.mean:.1f} at {peer.budget_text()}"
                       + (f" after sitting on the same plateau as ours until update {steps_text(plateau)}"
                          if plateau else ""))
        if p.a == "cql" and peer is not None:
            clause += " (its target takes the policy's mean next action where ours samples it, results/peer.md)"
        ablation = cell(table, f"{p.a}_mean_target", p.dataset)
        short = max(p.sa.budgets) < max(p.sb.budgets)
        cause = "a budget too short to leave the plateau" if short or plateau_like(p) else why_not(p)
        if ablation is not None:
            clause += f"; {p.a}_mean_target (ours with the peer's mean next action) scores {ablation.text()}"
            cause = ("the target explains the gap: an implementation choice, not the budget"
                     if ablation.mean - p.sa.mean > CLOSE else f"the target does not explain it: {cause}")
        clause += f": {cause}"
        clauses.append(clause)
    spread = f"Every other TD method beats bc by {min(p.diff for p in held):+.1f} to {max(p.diff for p in held):+.1f} " \
             "points; " if held else ""
    real = any("real disagreement" in c for c in clauses)
    return f"{spread}{'; '.join(clauses)}{'' if real else ', not evidence against the chapter'}."


def plateau_like(part: Part) -> bool:
    return part.diff is not None and abs(part.diff) <= PLATEAU


def read_dt_between(verdict: str, parts: list[Part], table) -> str:
    if verdict != "FAIL":
        return comparison_reading(verdict, parts)
    dt = next((p.sa for p in parts if p.a == "dt" and p.sa), None)
    others = sorted({b for p in parts for v, s in ((p.a, p.sa), (p.b, p.sb)) if s and v != "dt" for b in s.budgets})
    unequal = dt is not None and bool(others) and max(dt.budgets) < max(others)
    clauses = []
    for p in (p for p in parts if p.ok is False):
        if p.a == "dt":
            clause = (f"it is {p.diff:+.1f} points from %BC on {dataset_name(p.dataset)} "
                      f"({interval_text(p.low, p.high)}, not inside ±{CLOSE:g})")
        else:
            clause = f"{p.a} - dt = {p.diff:+.1f} {interval_text(p.low, p.high)} on {dataset_name(p.dataset)}"
        clauses.append(clause if unequal or p.a == "dt" else f"{clause}, {why_not(p)}")
    if unequal:
        return (f"dt ran {budget_phrase('dt', HOPPER_MEDIUM_EXPERT, dt)} with {plural(dt.n, 'seed')} against "
                f"{', '.join(map(steps_text, others))} for bc_10 and the TD methods: {'; '.join(clauses)}: unequal "
                f"budgets{' and too few seeds' if dt.n < FEW else ''}, so not yet a disagreement with the chapter.")
    real = any("real disagreement" in c for c in clauses) or any(p.a == "dt" and p.ok is False for p in parts)
    return (f"At equal budgets, {'; '.join(clauses)}: "
            f"{'a disagreement with the chapter at this budget' if real else 'not a disagreement with the chapter yet'}.")


def read_cql_lower_bound(verdict: str, parts: list[Part], rising: dict) -> str:
    if verdict != "PASS" or not rising:
        return comparison_reading(verdict, parts, what="Q - G")
    settled = [p for p in parts if p.diff is not None and p.dataset not in rising]
    stat = next(p.sa for p in parts if p.sa)
    qs = and_list(f"{max(r[2] for r in rise):.1f}" for rise, _ in rising.values())
    gs = f"{min(g for _, found in rising.values() for _, _, g, _ in found):.1f}-" \
         f"{max(g for _, found in rising.values() for _, _, g, _ in found):.1f}"
    tail = (f"; on {and_list(dataset_name(p.dataset) for p in settled)} Q settled below G "
            f"({and_list(f'{p.diff:+.1f}' for p in settled)})") if settled else ""
    return (f"Supported, but weakly on {and_list(dataset_name(d) for d in rising)}: at "
            f"{budget_phrase('cql', next(iter(rising)), stat)} Q(s0, pi(s0)) was still rising there (to {qs}, "
            f"against G of {gs}), so it lies below G partly because the critic has not converged{tail}.")


def read_extrapolation(verdict: str, parts: list[Part], table, runs) -> str:
    if verdict != "FAIL":
        return comparison_reading(verdict, parts)
    over = [p for p in parts if not p.b and p.diff is not None]
    scores = [p for p in parts if p.b and p.diff is not None]
    text = ""
    if over and not all(p.ok for p in over):
        text = (f"Wrong regime: on medium-replay's broad coverage td3_nobc's Q stays near G (mean Q - G "
                f"{and_list(f'{p.diff:+.1f}' for p in over)}, intervals "
                f"{and_list(interval_text(p.low, p.high) for p in over)})")
    if scores:
        text += (", and " if text else "") + "td3_bc - td3_nobc = " + and_list(
            f"{p.diff:+.1f} {interval_text(p.low, p.high)} on {dataset_name(p.dataset)}" for p in scores)
    found, _ = q_gaps(runs, "td3_nobc", HOPPER_MEDIUM_EXPERT)
    collapse = cell(table, "td3_nobc", HOPPER_MEDIUM_EXPERT)
    if found and collapse is not None:
        text += (f"; on Hopper medium-expert, outside this claim, td3_nobc's {plural(collapse.n, 'seed')} score "
                 f"{points(collapse.mean)} ± {collapse.std:.1f} with Q(s0, pi(s0)) {min(q for _, q, _, _ in found):.0f}-"
                 f"{max(q for _, q, _, _ in found):.0f} against G <= {max(g for _, _, g, _ in found):.0f}, the "
                 "failure the chapter places on narrow data (claim 8b)")
    return (text or comparison_reading(verdict, parts)) + "."


def read_narrow(verdict: str, parts: list[Part], table, runs) -> str:
    if verdict == "PASS":
        over = [p for p in parts if not p.b]
        scores = [p for p in parts if p.b]
        return (f"Supported as pre-registered: on narrow data td3_nobc overestimates (mean Q - G "
                f"{and_list(f'{p.diff:+.1f}' for p in over)}) and td3_bc leads it by "
                f"{and_list(f'{p.diff:+.1f}' for p in scores)} points, where on medium-replay (claim 8) it did not.")
    if verdict == "FAIL":
        return comparison_reading(verdict, parts, what="td3_nobc's Q - G")
    planned = 2 * len(NARROW) * PREREGISTERED_SEEDS
    done = [r for r in runs if r.dataset in NARROW and r.variant in ("td3_bc", "td3_nobc")]
    if not done:
        return f"Not run yet: none of the {planned} pre-registered runs (td3_bc and td3_nobc, " \
               f"{PREREGISTERED_SEEDS} seeds each at {steps_text(PREREGISTERED_BUDGET)} on {and_list(NARROW)})."
    shown, direction = [], True
    for r in done:
        qg = q_and_return(r)
        if r.variant == "td3_nobc" and qg:
            q, g, _ = qg
            direction &= q - g > FAR * abs(g)
            shown.append(f"td3_nobc seed {r.seed} on {dataset_name(r.dataset)} has Q(s0, pi(s0)) - G = {q - g:+.1f} "
                         f"against {FAR:g} |G| = {FAR * abs(g):.1f} and scores {points(r.scores[-1])}")
        else:
            shown.append(f"{r.variant} seed {r.seed} on {dataset_name(r.dataset)} scores {points(r.scores[-1])}")
    tail = ", in the claim's direction" if direction else ""
    decides = "one run decides" if len(done) == 1 else f"{len(done)} runs decide"
    return (f"Partial, not decided: {len(done)} of the {planned} pre-registered runs "
            f"{'is' if len(done) == 1 else 'are'} committed; {'; '.join(shown)}{tail}, but {decides} nothing.")


CLAIMS: list[tuple[str, str, str, Callable]] = [
    ("1", "TD methods beat BC on medium-replay",
     "The TD methods improve on BC on medium-replay (policy improvement, stitching): for every TD method run "
     f"({', '.join(TD_METHODS)}) with {MIN_SEEDS} seeds or more, its score minus bc's has a 95% CI above 0 on each "
     "core medium-replay dataset (a method with fewer seeds is shown, not decided).",
     claim_td_beats_bc),
    ("2", "filtering helps BC",
     "Filtering helps BC on mixed data: bc_10 (%BC, the best 10% of the trajectories) minus bc has a 95% CI above 0 "
     "on each core medium-replay dataset.", claim_filtering_helps),
    ("3", "DT near %BC, below TD",
     f"DT is close to %BC on medium-expert (dt - bc_10 has a 95% CI inside ±{CLOSE:g} points on "
     f"{HOPPER_MEDIUM_EXPERT}) and below the best TD method on medium-replay (best - dt has a 95% CI above 0 on "
     "each core medium-replay dataset).", claim_dt_between),
    ("4", "DT follows its target",
     "DT's return rises with its conditioning target (conditional control): the score at the highest target minus "
     "the score at the lowest, per seed, has a 95% CI above 0 on each core dataset dt ran on.",
     claim_dt_conditioning),
    ("5", "CQL lower-bounds the return",
     "CQL's Q(s0, pi(s0)) lies below the policy's discounted Monte Carlo return G (a lower bound): Q - G < 0 at the "
     f"final evaluation for every seed, on each core dataset cql ran on with {MIN_SEEDS} seeds or more (a dataset "
     "with fewer is shown, not decided).", claim_cql_lower_bound),
    ("6", "MOPO's penalty matters",
     "MOPO's uncertainty penalty matters where the model is imperfect (model exploitation): mopo - mopo_nopen "
     f"(penalty off) has a 95% CI above 0 on {HOPPER_MEDIUM_REPLAY}.", claim_mopo_penalty),
    ("7", "IQL beats AWR on poor behavior",
     "AWR's behavior-policy value falls short of IQL where the behavior is poor: iql - awr has a 95% CI above 0 on "
     "each core medium-replay dataset.", claim_iql_beats_awr),
    ("8", "TD3 without BC overestimates",
     "Extrapolation error: TD3 without its BC term (td3_nobc) overestimates, Q(s0, pi(s0)) - G with a 95% CI above "
     f"{FAR:g} abs(G) (Q far above the observed discounted return), and scores below TD3+BC (td3_bc - td3_nobc has a "
     "95% CI above 0), on each core medium-replay dataset.", claim_extrapolation_error),
    ("8b", "TD3 without BC collapses on narrow data",
     f"On narrow data, TD3 without its BC term overestimates and collapses: on {' and '.join(NARROW)}, td3_nobc's "
     f"Q(s0, pi(s0)) - G has a 95% CI above {FAR:g} |G| and td3_bc - td3_nobc has a 95% CI above 0, on each; "
     f"{PREREGISTERED_SEEDS} seeds of td3_bc and td3_nobc at {steps_text(PREREGISTERED_BUDGET)} updates (stated "
     "before its runs; only runs at that budget count).", claim_narrow_extrapolation),
    ("9", "offline pretraining pays online",
     "Offline pretraining pays online: at the end of the online budget, iql fine-tuned from its offline policy "
     "(iql_o2o) scores above the learner from scratch (sac_scratch) after the same online environment steps (the "
     f"dataset's own not counted): iql_o2o - sac_scratch has a 95% CI above 0 on each of {' and '.join(O2O_DATASETS)} "
     "(stated before its runs, issue 32).", lambda table, runs: claim_pretraining_pays(runs)),
    ("10", "calibration reduces the initial collapse",
     "Calibration reduces the initial collapse: the drop from the last offline evaluation to the worst evaluation in "
     f"the first {EARLY:.0%} of the online budget is larger for cql (cql_o2o) than for Cal-QL (calql_o2o): the drop "
     f"difference has a 95% CI above 0 on {HOPPER_MEDIUM_REPLAY} (stated before its runs, issue 32).",
     lambda table, runs: claim_calibration(runs)),
]


def check_claims(table, runs) -> list[Claim]:
    claims = []
    for label, short, text, check in CLAIMS:
        verdict, lines, reading = check(table, runs)
        claims.append(Claim(label, short, text, verdict, lines, reading))
    return claims


def write_claims(claims: list[Claim], head: list[str], path: Path) -> None:
    lines = ["# The chapter's claims, checked against the MuJoCo runs", "", *[f"{line}  " for line in head], "",
             "Each claim is decided on 95% bootstrap intervals of the final normalized scores (last evaluation, local "
             f"scale), {stats.REPS} resamples, the seeds resampled within each side: PASS when the interval supports "
             "the claim, FAIL when it does not, NOT RUN (naming the missing runs, and showing the partial ones) only "
             f"when runs are absent or too few. Scores are shown as mean ± std over seeds (n, updates); an interval "
             f"needs {MIN_SEEDS} seeds a side. Core datasets: {', '.join(CORE)}. Under each heading, a Reading: one "
             "sentence on what the numbers say (budget too short, wrong regime, too few seeds, or a real "
             "disagreement with the chapter).", "",
             *markdown_table(["#", "claim", "reading", "verdict"], [[c.label, c.text, c.reading, c.verdict] for c in claims])]
    for c in claims:
        lines += ["", f"## {c.label}. {c.verdict}: {c.text}", "", f"Reading: {c.reading}", "",
                  *[f"- {d}" for d in c.lines]]
    path.write_text("\n".join(lines) + "\n")
