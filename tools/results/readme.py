"""The README's results section, between its marker lines: the headline tables and the claims with their
readings; the long lists (every dataset, the commands) stay in results/."""

from __future__ import annotations

from pathlib import Path

from .claims import OLD_COLUMN, Claim
from .runs import BF16_SUFFIX, HALF_BUDGET
from .scores import AGGREGATE_LEGEND, aggregate_table
from .tables import markdown_table

BEGIN, END = "<!-- results: begin -->", "<!-- results: end -->"
# Ablations answer a claim: the claims table reads them, the aggregate of results/scores.md lists them.
ABLATIONS = ("td3_nobc", "mopo_nopen", "dt_init1", "cql_mean_target")


def headline(variant: str) -> bool:
    """A variant the README's aggregate lists: not an ablation, a half-budget run or a bf16 run."""
    return variant not in ABLATIONS and not variant.endswith((HALF_BUDGET, BF16_SUFFIX))


def readme_section(head: list[str], agg: dict, claims: list[Claim], commands: list[str],
                   pendulum_head: list[str], plots: tuple[str, ...] = ("profiles.png", "curves.png")) -> list[str]:
    """The summary a newcomer reads: how the runs were made, the aggregate by budget, the claims with their
    readings, and where the long tables and the plots are (every dataset, the peer, the published numbers,
    Pendulum).  plots: the figures make_results drew (profiles.png, curves.png, curves-pendulum.png)."""
    made = (f"Reproduce: `{commands[0]}`, then `python -m tools.make_results`." if len(commands) == 1 else
            f"The {len(commands)} sweep commands behind these runs, and the same at the full budget on a GPU: "
            "[results/reproduce.md](results/reproduce.md).")
    pendulum = ("Pendulum runs (the small datasets): the Pendulum tables of [results/scores.md](results/scores.md)"
                + ("; their learning curves: [results/curves-pendulum.png](results/curves-pendulum.png)."
                   if "curves-pendulum.png" in plots else ".")
                if pendulum_head else "No Pendulum run in the run roots.")
    figures = "; ".join(text for name, text in (
        ("curves.png", "learning curves: [results/curves.png](results/curves.png)"),
        ("profiles.png", "performance profiles of the aggregate's variants (the fraction of runs above each "
                         "score): [results/profiles.png](results/profiles.png)")) if name in plots)
    return ["## Results (MuJoCo, local D4RL-style datasets)", "", " ".join(head), "",
            "Interquartile mean of the normalized score (a run's mean over its last 3 evaluations) over the core "
            "datasets and seeds, with a "
            "stratified bootstrap 95% CI (rliable), on the local scale and on D4RL's; the methods and the peer "
            "library d3rlpy, the ablations and the 500k-update runs in results/scores.md. " + AGGREGATE_LEGEND, "",
            *aggregate_table({v: a for v, a in agg.items() if headline(v)}), "",
            "Every dataset, mean ± std and n per cell: [results/scores.md](results/scores.md); ours beside the "
            "peer library d3rlpy on the same data: [results/peer.md](results/peer.md); the papers' published "
            "D4RL numbers beside ours (not directly comparable): [results/published.md](results/published.md)"
            + (f"; {figures}. " if figures else ". ") + made + " " + pendulum, "",
            "The chapter's claims, each stated before the runs that decide it and decided under the evidence protocol "
            "[results/protocol.md](results/protocol.md): SUPPORTED, CONTRADICTED or UNDECIDED on 95% t intervals, "
            "UNDECIDED while a side has fewer than 5 seeds; the earlier protocol's verdicts beside them (the numbers: "
            "[results/claims.md](results/claims.md)):", "",
            *markdown_table(["#", "claim", "reading", OLD_COLUMN, "verdict"],
                            [[c.label, c.short, c.reading, c.old, c.verdict] for c in claims])]


def update_readme(readme: Path, section: list[str]) -> None:
    """Rewrites the README's results section (between its two marker lines)."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return
    readme.write_text(text[:text.index(BEGIN)] + "\n".join([BEGIN, "", *section, "", END])
                      + text[text.index(END) + len(END):])
