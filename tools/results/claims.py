"""The chapter's claims on MuJoCo as results/protocol.md states them: each made of parts decided on 95% t intervals
(verdicts.py), SUPPORTED, CONTRADICTED or UNDECIDED, with the numbers behind each and one sentence reading them
(readings.py); the verdicts of the earlier protocol beside them: results/claims.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .o2o import DIP, EARLY, O2O_DATASETS, claim_cells, dip_part, drop_part, end_parts, values
from .readings import reading
from .runs import (BF16_SUFFIX, CORE, CORE_MEDIUM_REPLAY, DISCOUNTED_RETURN, HOPPER_MEDIUM_EXPERT, HOPPER_MEDIUM_REPLAY,
                   LAST, LEGACY_DISCOUNTED_RETURN, Q_INITIAL, TARGET_KEYS, RunRecord, last_mean, plural, steps_text)
from .stats import Stat, cell, score_table
from .tables import markdown_table
from .verdicts import (EQUIVALENT, GREATER, LESS, MARGIN, SEEDS, STRADDLES, Part, budget_text, combine, counted,
                       make_part)

HALFCHEETAH_MEDIUM_REPLAY = "local/halfcheetah/medium-replay-v0"
TD_METHODS = ["td3_bc", "iql", "cql", "bcq", "mopo", "combo"]
# Claim 3's best TD method per core medium-replay dataset, named in results/protocol.md before the new runs.
BEST_TD = {HOPPER_MEDIUM_REPLAY: "iql", HALFCHEETAH_MEDIUM_REPLAY: "td3_bc"}
FAR = 0.5  # claim 8: td3_nobc's Q - G - FAR |G| > 0, i.e. Q at least 1.5 times a positive return
EPISODES = 20  # claim 10b counts only runs with this many evaluation episodes
NARROW = ["local/walker2d/medium-expert-v0", "local/halfcheetah/expert-v0"]
SAC_CHECK = (HALFCHEETAH_MEDIUM_REPLAY, 48.0, 15.0)  # claim 9b's check before its runs: sac_scratch within 15 of 48
BF16 = ["td3_bc", "iql"]  # claim P: decided; the cql and combo differences are reported
BF16_REPORTED = ["cql", "combo"]
OLD_COLUMN = "verdict 2026-12-04 (final evaluation, 2-3 seeds)"
# The verdicts of the earlier protocol (final evaluation, percentile bootstrap): results/claims.md at commit 05afe8b.
OLD_VERDICTS = {"1": "FAIL", "2": "PASS", "3": "FAIL", "4": "PASS", "5": "PASS", "6": "FAIL", "7": "FAIL", "8": "FAIL",
                "8b": "PASS", "9": "PASS", "10": "FAIL"}


@dataclass
class Claim:
    label: str
    short: str
    text: str
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # numbers shown beside the parts, not decided
    context: dict = field(default_factory=dict)  # numbers the reading names beside the parts
    verdict: str = ""
    reading: str = ""

    @property
    def old(self) -> str:
        """The verdict of 2026-12-04, or "new"."""
        return OLD_VERDICTS.get(self.label, "new")

    @property
    def lines(self) -> list[str]:
        return [p.line for p in self.parts] + self.notes


def compare(table, a: str, b: str, dataset: str, test: str = GREATER) -> Part:
    """a - b on the dataset's cells (Welch's t): > 0, or inside ±MARGIN for EQUIVALENT."""
    return make_part(dataset, test, [(a, cell(table, a, dataset)), (b, cell(table, b, dataset))])


def per_seed(variant: str, dataset: str, label: str, test: str, found: list[tuple[RunRecord, float, str]],
             missing: str) -> Part:
    """A one-sample part over the seeds' (run, value, what the value is made of); missing: why there is none."""
    stat = Stat([x for _, x, _ in found], [r.budget for r, _, _ in found], [r.seed for r, _, _ in found]) \
        if found else None
    detail = "; ".join(f"seed {r.seed}: {text}" for r, _, text in found) if found else missing
    return make_part(dataset, test, [(variant, stat)], label, detail)


def q_and_g(run: RunRecord) -> Optional[tuple[float, float, str]]:
    """(Q(s0, pi(s0)), the discounted Monte Carlo return G, the updates they cover): means over the run's last 3
    evaluations that logged both."""
    both = [(r.get(Q_INITIAL), r.get(DISCOUNTED_RETURN, r.get(LEGACY_DISCOUNTED_RETURN)), r["step"])
            for r in run.evaluations]
    both = [b for b in both if b[0] is not None and b[1] is not None][-LAST:]
    if not both:
        return None
    return (float(np.mean([q for q, _, _ in both])), float(np.mean([g for _, g, _ in both])),
            f"updates {steps_text(both[0][2])}-{steps_text(both[-1][2])}")


def q_part(runs, variant: str, dataset: str, far: bool) -> Part:
    """Q(s0, pi(s0)) - G per run: < 0 (claim 5), or Q - G - FAR |G| > 0 (claims 8 and 8b)."""
    found = []
    for run in (r for r in runs if r.variant == variant and r.dataset == dataset):
        if (qg := q_and_g(run)) is not None:
            q, g, steps = qg
            found.append((run, q - g - FAR * abs(g) if far else q - g, f"Q = {q:.1f}, G = {g:.1f} ({steps})"))
    mine = sum(r.variant == variant and r.dataset == dataset for r in runs)
    missing = f"{plural(mine, variant + ' run')}, none logged {Q_INITIAL} and {DISCOUNTED_RETURN}"
    label = f"{variant}'s Q(s0, pi(s0)) - G" + (f" - {FAR:g} |G|" if far else "")
    return per_seed(variant, dataset, label, GREATER if far else LESS, found, missing if mine else "")


def target_means(run: RunRecord) -> dict[float, float]:
    """DT's score per conditioning target (eval/target_<R>/normalized_score, or the older
    eval/normalized_score_<R>): the mean over the run's last 3 evaluations that logged it."""
    per_target: dict[float, list[float]] = {}
    for record in run.evaluations:
        for key, value in record.items():
            for pattern in TARGET_KEYS:
                if (match := pattern.match(key)) is not None:
                    try:
                        per_target.setdefault(float(match["target"]), []).append(value)
                    except ValueError:  # eval/target_<name>/... with a name that is not a return
                        pass
    return {target: last_mean(scores) for target, scores in per_target.items()}


def rising(runs, variant: str, dataset: str) -> Optional[list[tuple[float, float, float]]]:
    """(first, second-to-last, last) Q(s0, pi(s0)) per seed when Q rose between the last two evaluations of every
    seed (a critic still converging from its start lies below G without testing the bound), else None."""
    found = []
    for run in (r for r in runs if r.variant == variant and r.dataset == dataset):
        logged = [record[Q_INITIAL] for record in run.evaluations if Q_INITIAL in record]
        if len(logged) < 2 or logged[-1] <= logged[-2]:
            return None
        found.append((logged[0], logged[-2], logged[-1]))
    return found or None


# --- the claims: each returns (parts, notes, context)


def claim_td_beats_bc(table, runs):
    parts = [compare(table, m, "bc", d) for d in CORE_MEDIUM_REPLAY for m in TD_METHODS]
    mean_target = {p.dataset: cell(table, "cql_mean_target", p.dataset) for p in parts
                   if p.variants[0] == "cql" and p.low is not None and p.low <= 0}
    return parts, [], {"mean_target": {d: s for d, s in mean_target.items() if s}}


def claim_filtering_helps(table, runs):
    return [compare(table, "bc_10", "bc", d) for d in CORE_MEDIUM_REPLAY], [], {}


def claim_dt_between(table, runs):
    return ([compare(table, "dt", "bc_10", HOPPER_MEDIUM_EXPERT, EQUIVALENT)]
            + [compare(table, BEST_TD[d], "dt", d) for d in CORE_MEDIUM_REPLAY]), [], {}


def claim_dt_conditioning(table, runs):
    parts = []
    for dataset in CORE:
        mine = [(r, target_means(r)) for r in runs if r.variant == "dt" and r.dataset == dataset]
        common = sorted(set.intersection(*(set(t) for _, t in mine))) if mine else []
        found = []
        if len(common) >= 2:  # the highest and the lowest target every seed evaluated
            low, high = common[0], common[-1]
            found = [(r, t[high] - t[low], f"{t[high]:.1f} at {high:g} - {t[low]:.1f} at {low:g}") for r, t in mine]
        missing = f"{plural(len(mine), 'dt run')} with {plural(len(common), 'common target')}" if mine else ""
        parts.append(per_seed("dt", dataset, "dt's score at the highest target minus the lowest", GREATER, found,
                              missing))
    return parts, [], {}


def claim_cql_lower_bound(table, runs):
    parts = [q_part(runs, "cql", d, far=False) for d in CORE]
    found = {d: r for d in CORE if (r := rising(runs, "cql", d))}
    notes = [f"{d}: Q(s0, pi(s0)) was still rising at the last evaluation on every seed (first, last two: "
             f"{'; '.join(f'{a:.1f} -> {b:.1f} -> {c:.1f}' for a, b, c in r)}): the critic had not converged."
             for d, r in found.items()]
    return parts, notes, {"rising": found}


def claim_mopo_penalty(table, runs):
    return [compare(table, "mopo", "mopo_nopen", HOPPER_MEDIUM_REPLAY)], [], {}


def claim_iql_beats_awr(table, runs):
    return [compare(table, "iql", "awr", d) for d in CORE_MEDIUM_REPLAY], [], {}


def every_seed_on_the_claims_side(parts: list[Part]) -> list[Part]:
    """The one-sample parts whose interval straddles the threshold although every seed's value lies on the claim's
    side: the seeds spread too widely for a t interval (one far from the others). Said beside the verdict; the
    protocol's interval still decides it."""
    side = {GREATER: lambda x: x > 0, LESS: lambda x: x < 0}
    return [p for p in parts if len(p.samples) == 1 and p.reason == STRADDLES and p.test in side
            and all(side[p.test](x) for x in p.samples[0][1].values)]


def extrapolation(table, runs, datasets: list[str]):
    parts = [part for d in datasets
             for part in (q_part(runs, "td3_nobc", d, far=True), compare(table, "td3_bc", "td3_nobc", d))]
    return parts, [], {"one_sided": every_seed_on_the_claims_side(parts)}


def claim_extrapolation_error(table, runs):
    return extrapolation(table, runs, CORE_MEDIUM_REPLAY)


def claim_narrow_extrapolation(table, runs):
    return extrapolation(table, runs, NARROW)


def claim_pretraining_pays(table, runs):
    return end_parts(runs, "iql_o2o", "sac_scratch_cql"), [], {}


def claim_pretraining_pays_sac(table, runs):
    dataset, target, tolerance = SAC_CHECK
    sac = values(claim_cells(runs).get(("sac_scratch", dataset), []), lambda o: o.end)
    found = f"{sac.text()}, {abs(sac.mean - target):.1f} points away." if sac else "no run yet."
    check = (f"Check before the claim's runs: sac_scratch's score on {dataset} should lie within {tolerance:g} points "
             f"of {target:g}: {found}")
    return end_parts(runs, "iql_o2o", "sac_scratch"), [check], {"sac": sac, "check": SAC_CHECK}


def claim_calibration(table, runs):
    return [drop_part(runs, HOPPER_MEDIUM_REPLAY)], [], {}


def claim_calibration_expert(table, runs):
    part, placebo = dip_part(runs, HOPPER_MEDIUM_EXPERT, EPISODES)
    notes = [f"Beside it, not decided: {placebo.numbers}."]
    other = [f"{r.variant} seed {r.seed} ({r.config.get('eval_episodes')} episodes)" for r in runs
             if r.variant in part.variants and r.dataset == HOPPER_MEDIUM_EXPERT
             and r.config.get("eval_episodes") != EPISODES]
    if other:
        notes.append(f"Not counted (not at {EPISODES} evaluation episodes): {', '.join(other)}.")
    return [part], notes, {"placebo": placebo}


def claim_awac(table, runs):
    return end_parts(runs, "iql_o2o", "awac_o2o"), [], {}


def claim_bf16(table, runs):
    parts = [compare(table, v + BF16_SUFFIX, v, HALFCHEETAH_MEDIUM_REPLAY, EQUIVALENT) for v in BF16]
    notes = []
    for variant in BF16_REPORTED:
        for dataset in sorted({d for v, d in table if v == variant + BF16_SUFFIX}) or [HALFCHEETAH_MEDIUM_REPLAY]:
            fp32 = cell(table, variant, dataset)
            if fp32 is not None and fp32.n >= SEEDS:
                shown = compare(table, variant + BF16_SUFFIX, variant, dataset, EQUIVALENT).numbers
            else:
                shown = (f"{dataset}: {variant}_bf16 - {variant} waits for the fp32 cell's {SEEDS} seeds ({variant} "
                         f"{fp32.text() if fp32 else 'not run'})")
            notes.append(f"Reported, not decided: {shown}.")
    return parts, notes, {}


ONLINE = "at the end of the online budget on " + " and ".join(O2O_DATASETS)
CLAIMS: list[tuple[str, str, str, Callable]] = [
    ("1", "TD methods beat BC on medium-replay",
     f"TD methods improve on BC on medium-replay: for each of {', '.join(TD_METHODS)}: method - bc > 0 on each core "
     "medium-replay dataset.", claim_td_beats_bc),
    ("2", "filtering helps BC", "Filtering helps BC on mixed data: bc_10 - bc > 0 on each core medium-replay dataset.",
     claim_filtering_helps),
    ("3", "DT near %BC, below TD",
     f"DT is close to %BC on medium-expert and below the best TD method on medium-replay: dt - bc_10 inside "
     f"±{MARGIN:g} on {HOPPER_MEDIUM_EXPERT} (equivalence), and best - dt > 0 on each core medium-replay dataset, "
     f"the best TD method named before the new runs: {' and '.join(f'{m} on {d}' for d, m in BEST_TD.items())}.",
     claim_dt_between),
    ("4", "DT follows its target",
     "DT's return rises with its conditioning target: per seed, the score at the highest target minus the score at "
     "the lowest (each the mean of the last 3 evaluations) > 0 (one-sample t), on each core dataset.",
     claim_dt_conditioning),
    ("5", "CQL lower-bounds the return",
     "CQL's Q is a lower bound: Q(s0, pi(s0)) - G < 0 (one-sample t over runs; per run the mean over its last 3 "
     "evaluations that logged both) on each core dataset.", claim_cql_lower_bound),
    ("6", "MOPO's penalty matters", f"MOPO's penalty matters: mopo - mopo_nopen > 0 on {HOPPER_MEDIUM_REPLAY}.",
     claim_mopo_penalty),
    ("7", "IQL beats AWR on poor behavior",
     "AWR falls short of IQL on poor behavior: iql - awr > 0 on each core medium-replay dataset.", claim_iql_beats_awr),
    ("8", "TD3 without BC overestimates",
     f"Extrapolation error on medium-replay: td3_nobc's Q - G - {FAR:g} |G| > 0 (one-sample t over runs) and "
     "td3_bc - td3_nobc > 0, on each core medium-replay dataset.", claim_extrapolation_error),
    ("8b", "TD3 without BC collapses on narrow data",
     f"Extrapolation error on narrow data: the same two parts on each of {' and '.join(NARROW)}, td3_bc and td3_nobc "
     "at 50k updates.", claim_narrow_extrapolation),
    ("9", "offline pretraining pays online",
     f"Offline pretraining pays online (issue 32, its baseline renamed): iql_o2o - sac_scratch_cql > 0 {ONLINE} "
     "(sac_scratch_cql: the runs formerly named sac_scratch, cql.py with CQL's settings and no random warm-up).",
     claim_pretraining_pays),
    ("9b", "offline pretraining pays online, against standard SAC",
     f"Offline pretraining pays online, against standard SAC: iql_o2o - sac_scratch > 0 {ONLINE} (sac_scratch: SAC "
     "with its own settings, actor lr 3e-4, two hidden layers, 10k uniform random steps before the first update).",
     claim_pretraining_pays_sac),
    ("10", "calibration reduces the initial collapse",
     f"Calibration reduces the initial collapse (issue 32): the drop from the switch to the worst evaluation in the "
     f"first {EARLY:.0%} of the online budget, cql_o2o - calql_o2o > 0 on {HOPPER_MEDIUM_REPLAY} (2 seeds a side).",
     claim_calibration),
    ("10b", "calibration reduces the dip where there is something to unlearn",
     f"Calibration reduces the initial collapse where there is something to unlearn: on {HOPPER_MEDIUM_EXPERT}, "
     f"with 20 evaluation episodes, dip = switch - the lowest mean of 3 consecutive online evaluations in the first "
     f"{DIP:.0%} of the online budget; dip(cql_o2o) - dip(calql_o2o) > 0 (Welch). Beside it, the same rule inside "
     "the offline phase (the metric's own noise).", claim_calibration_expert),
    ("11", "IQL fine-tunes better than AWAC",
     f"IQL fine-tunes better than AWAC (issue 46): iql_o2o - awac_o2o > 0 {ONLINE}, both at iql_o2o's budget.",
     claim_awac),
    ("P", "bf16 leaves the scores unchanged",
     f"bf16 leaves the scores unchanged (issue 47): for {' and '.join(BF16)} on {HALFCHEETAH_MEDIUM_REPLAY} at 50k "
     f"updates, bf16 - fp32 inside ±{MARGIN:g} (Welch); the {' and '.join(BF16_REPORTED)} differences reported, "
     "not decided.", claim_bf16),
]


def not_counted(runs: list[RunRecord], parts: list[Part]) -> list[str]:
    """The runs of the claim's cells that are not at its budget and cadence."""
    cells = {(v, p.dataset) for p in parts for v in p.variants}
    found = [f"{r.variant} seed {r.seed} on {r.dataset} ({budget_text(r)})" for r in runs
             if (r.variant, r.dataset) in cells and not counted(r)]
    return [f"Not counted (not at the claim's budget and cadence): {', '.join(found)}."] if found else []


def check_claims(runs: list[RunRecord]) -> list[Claim]:
    """Every claim on the runs at its budget and cadence."""
    counted_runs = [r for r in runs if counted(r)]
    table = score_table(counted_runs)
    claims = []
    for label, short, text, check in CLAIMS:
        parts, notes, context = check(table, counted_runs)
        claim = Claim(label, short, text, parts, notes + not_counted(runs, parts), context, combine(parts))
        claim.reading = reading(claim)
        claims.append(claim)
    return claims


def write_claims(claims: list[Claim], head: list[str], path: Path) -> None:
    lines = ["# The chapter's claims, checked against the MuJoCo runs", "", *[f"{line}  " for line in head], "",
             "The evidence protocol is [protocol.md](protocol.md), written before the runs it governs. A run's score "
             "is the mean of the normalized scores (local scale) of its last 3 evaluations: for the short budgets "
             "(bcq 20k, cql and combo 10k, dt 8k updates) a mean over the later half of training, not only its end. "
             "Scores: mean ± sample std over seeds (n, updates). Intervals: 95% Student t, Welch's for a difference "
             "of two cells, one-sample for a per-seed quantity; an equivalence holds when the Welch interval lies "
             f"inside ±{MARGIN:g}. A part is SUPPORTED when its interval lies on the claim's side of the threshold, "
             "CONTRADICTED when it lies on the other side, UNDECIDED when it straddles the threshold, a cell is "
             f"missing or a side has fewer than {SEEDS} seeds; a claim is SUPPORTED when every part is, CONTRADICTED "
             "when any part is, otherwise UNDECIDED. Only runs at the budget and cadence of the claim's sweep count. "
             f"Core datasets: {', '.join(CORE)}. The column \"{OLD_COLUMN}\" keeps the verdicts of the earlier "
             "protocol (the last evaluation, percentile bootstrap, PASS / FAIL; results/claims.md at commit 05afe8b).",
             "", *markdown_table(["#", "claim", "reading", OLD_COLUMN, "verdict"],
                                 [[c.label, c.text, c.reading, c.old, c.verdict] for c in claims])]
    for c in claims:
        lines += ["", f"## {c.label}. {c.verdict}: {c.text}", "", f"Reading: {c.reading}", "",
                  f"{OLD_COLUMN.capitalize()}: {c.old}.", "", *[f"- {d}" for d in c.lines]]
    path.write_text("\n".join(lines) + "\n")
