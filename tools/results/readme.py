"""The README's results section, between its marker lines: the headline tables and the claims with their
readings; the long lists (every dataset, the commands) stay in results/."""

from __future__ import annotations

from pathlib import Path

from .claims import Claim
from .runs import CORE, HEADLINE, PENDULUM, d4rl_citation
from .tables import AGGREGATE_LEGEND, SCORE_LEGEND, aggregate_table, markdown_table, peer_table, suite_table

BEGIN, END = "<!-- results: begin -->", "<!-- results: end -->"


def readme_section(head: list[str], agg: dict, table, peer: list[dict], claims: list[Claim], commands: list[str],
                   pendulum_head: list[str]) -> list[str]:
    made = (["Reproduce these runs on CPU:", "", "```bash", *commands, "python tools/make_results.py", "```", ""]
            if len(commands) == 1 else
            [f"The {len(commands)} sweep commands that made these runs, and the same at the full budget on a GPU: "
             "[results/reproduce.md](results/reproduce.md).", ""])
    lines = ["### MuJoCo locomotion (local D4RL-style datasets)", "", *[f"{line}  " for line in head], "",
             SCORE_LEGEND + " " + d4rl_citation(), "",
             "Aggregate over the core datasets: interquartile mean of the final normalized score over (dataset, "
             "seed) with a stratified bootstrap 95% CI (rliable); performance profiles in "
             "[results/profiles.png](results/profiles.png). " + AGGREGATE_LEGEND, "", *aggregate_table(agg), "",
             "Final normalized score on the core datasets (every dataset, and the best scores: "
             "[results/scores.md](results/scores.md); published D4RL numbers beside ours, not directly comparable: "
             "[results/published.md](results/published.md)):", "",
             *suite_table(table, HEADLINE, datasets=CORE), "",
             "Ours beside the peer library d3rlpy on the core datasets, the pairs with a run (every pair: "
             "[results/peer.md](results/peer.md)):", "",
             *peer_table([r for r in peer if r["dataset"] in CORE and (r["ours"] or r["peer"])]), "",
             "The chapter's claims, decided on 95% intervals, each with a reading of its numbers (the numbers: "
             "[results/claims.md](results/claims.md); sanity of the normalization: "
             "[results/sanity.md](results/sanity.md)):", "",
             *markdown_table(["#", "claim", "reading", "verdict"],
                             [[c.label, c.short, c.reading, c.verdict] for c in claims]), "",
             *made,
             "![learning curves](results/curves.png)", "", "![performance profiles](results/profiles.png)", "",
             "### Pendulum (the small local datasets)", ""]
    if not pendulum_head:
        lines.append("No Pendulum run in the run roots.")
    else:
        lines += [*[f"{line}  " for line in pendulum_head], "",
                  "Final normalized score, mean ± std over seeds (local scale: Pendulum has no D4RL counterpart):", "",
                  *suite_table(table, PENDULUM), "", "![Pendulum learning curves](results/curves-pendulum.png)"]
    return lines


def update_readme(readme: Path, section: list[str]) -> None:
    """Rewrites the README's results section (between its two marker lines)."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return
    readme.write_text(text[:text.index(BEGIN)] + "\n".join([BEGIN, "", *section, "", END])
                      + text[text.index(END) + len(END):])
