"""results/sanity.md: bc on expert data scores about 100, on random data about 0 (the normalization and the
evaluation agree with the data)."""

from __future__ import annotations

from pathlib import Path

from .runs import d4rl_citation, env_of, kind
from .stats import cell
from .tables import cell_text, markdown_table

CLOSE = 10.0  # normalized-score points: the sanity runs' tolerance


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
