"""The one-sentence reading of each claim, generated from its parts' numbers (claims.py, verdicts.py): the verdict,
the seeds and budgets behind it, and for UNDECIDED whether it is too few seeds, a straddling interval or a missing
cell; a few claims add what their context shows (a critic still rising, every seed on the claim's side of an
interval that straddles, the placebo of claim 10b, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .runs import LAST, dataset_name, steps_text
from .stats import interval_text
from .verdicts import (BUDGETS, CONTRADICTED, FEW, MISSING, SEEDS, STRADDLES, SUPPORTED, WHERE, Part, threshold)

if TYPE_CHECKING:
    from .claims import Claim

SHORT = ("bcq", "cql", "combo", "dt")  # budgets whose last 3 evaluations cover the later half of training


def and_list(items) -> str:
    """'a', 'a and b', 'a, b and c' (repeats dropped)."""
    items = list(dict.fromkeys(items))
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def budget_of(variant: str) -> str:
    offline, online, _ = BUDGETS[variant]
    if not online:
        return f"{steps_text(offline)} updates"
    return (f"{steps_text(offline)} updates + " if offline else "") + f"{steps_text(online)} environment steps"


def seeds_and_budgets(parts: list[Part]) -> str:
    """'3 seeds a side, bc_10 and bc at 50k updates' ('2-3 seeds a side, ...'; '5 seeds, ...' for per-seed
    quantities alone)."""
    ns = sorted({s.n for p in parts for _, s in p.samples if s})
    by_budget: dict[str, list[str]] = {}
    for variant in dict.fromkeys(v for p in parts for v, s in p.samples if s):
        by_budget.setdefault(budget_of(variant), []).append(variant)
    seeds = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    side = " a side" if any(len(p.samples) == 2 for p in parts) else ""
    return (f"{seeds} seed{'s' * (ns[-1] != 1)}{side}, "
            + "; ".join(f"{and_list(variants)} at {budget}" for budget, variants in by_budget.items()))


def summary(p: Part) -> str:
    """'td3_bc - bc = +21.8 [20.1, 24.8] on Hopper medium-replay'."""
    interval = f" {interval_text(p.low, p.high)}" if p.low is not None else ""
    return f"{p.name} = {p.diff:+.1f}{interval} on {dataset_name(p.dataset)}"


def short_budgets(parts: list[Part]) -> str:
    """Where the short budgets are read: their scores average the later half of training (results/protocol.md)."""
    windows = []
    for variant in dict.fromkeys(v for p in parts for v, s in p.samples if s and v in SHORT):
        updates, _, every = BUDGETS[variant]
        windows.append(f"{variant} over updates {steps_text(updates - (LAST - 1) * every)}-{steps_text(updates)}")
    return f" (short budgets: the score averages the later half of training, {and_list(windows)})" if windows else ""


def undecided(parts: list[Part]) -> str:
    """Why the claim is UNDECIDED: cells missing, too few seeds (and where these seeds' intervals lie), or
    intervals straddling the threshold."""
    clauses = []
    missing = [p for p in parts if p.reason == MISSING]
    if missing:
        absent: dict[str, list[str]] = {}  # what is missing -> on which datasets
        for p in missing:
            what = p.detail or and_list(v for v, s in p.samples if not s)
            absent.setdefault(what, []).append(dataset_name(p.dataset))
        clauses.append("missing: " + "; ".join(f"{what} on {and_list(names)}" for what, names in absent.items()))
    few = [p for p in parts if p.reason == FEW]
    if few:
        shown = [p for p in few if p.low is not None]
        off = [p for p in shown if p.side != SUPPORTED]
        clause = f"fewer than {SEEDS} seeds ({seeds_and_budgets(few)})"
        if shown:
            clause += f"; on these seeds {len(shown) - len(off)} of {len(shown)} intervals lie on the claim's side"
        if off:
            clause += ", not " + and_list(f"{summary(p)} ({WHERE[p.test][p.side]})" for p in off)
        clauses.append(clause)
    straddling = [p for p in parts if p.reason == STRADDLES]
    if straddling:
        clauses.append(and_list(f"{summary(p)} straddles {threshold(p.test)} with {p.n} seeds"
                                f"{' a side' if len(p.samples) == 2 else ''}" for p in straddling))
    return "Undecided: " + "; ".join(clauses)


def generic(claim: Claim) -> str:
    parts = claim.parts
    if claim.verdict == SUPPORTED:
        return f"Supported with {seeds_and_budgets(parts)}: {and_list(summary(p) for p in parts)}"
    if claim.verdict == CONTRADICTED:
        against = [p for p in parts if p.verdict == CONTRADICTED]
        held = [p for p in parts if p.verdict == SUPPORTED]
        return (f"Contradicted with {seeds_and_budgets(against)}: "
                f"{and_list(f'{summary(p)} ({WHERE[p.test][p.side]})' for p in against)}"
                + (f", while {and_list(summary(p) for p in held)} hold" if held else ""))
    return undecided(parts)


def context_clause(claim: Claim) -> str:
    """What a claim's context adds to the numbers of its parts."""
    context = claim.context
    if claim.label == "1" and context["mean_target"]:
        return "; cql_mean_target (ours with the peer's mean next action) scores " + and_list(
            f"{s.text()} on {dataset_name(d)}" for d, s in context["mean_target"].items())
    if claim.label == "5" and context["rising"]:
        top = and_list(f"{max(last for *_, last in r):.1f}" for r in context["rising"].values())
        return (f"; on {and_list(dataset_name(d) for d in context['rising'])} Q(s0, pi(s0)) was still rising at the "
                f"last evaluation of every seed (to {top}): the critic had not converged at this budget, so the bound "
                "is tested only weakly there")
    if claim.label in ("8", "8b") and context["one_sided"]:
        return "; " + and_list(
            f"on {dataset_name(p.dataset)} {p.label} lies {WHERE[p.test][SUPPORTED]} on every seed "
            f"({min(p.samples[0][1].values):+.1f} to {max(p.samples[0][1].values):+.1f}): the interval straddles 0 "
            "because the seeds spread widely, not because a seed falls short" for p in context["one_sided"])
    if claim.label == "9b" and context["sac"] is not None:
        sac, (dataset, target, tolerance) = context["sac"], context["check"]
        off = abs(sac.mean - target)
        return (f"; the check before the runs puts sac_scratch at {sac.text()} on {dataset_name(dataset)}, "
                f"{off:.1f} points from {target:g} ({'within' if off <= tolerance else 'NOT within'} {tolerance:g})")
    if claim.label == "10" and any(p.reason == FEW for p in claim.parts):
        return "; the claim stays at its 2 seeds a side (results/protocol.md), so it reads UNDECIDED by design"
    if claim.label == "10b" and context["placebo"].diff is not None:
        return (f"; inside the offline phase the same rule gives {summary(context['placebo'])} (the metric's own "
                "noise)")
    return ""


def reading(claim: Claim) -> str:
    return f"{generic(claim)}{short_budgets(claim.parts)}{context_clause(claim)}."
