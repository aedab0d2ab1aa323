"""results/published.md: the papers' and libraries' published D4RL numbers (results/published.csv, each with its
source, the source's short label and budget) beside ours on the same environment and dataset kind, on both scales;
marked not directly comparable (other data, a fraction of their budgets)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from .runs import ENV_NAMES, HALF_BUDGET, KIND_ORDER, PROJECT, d4rl_citation, steps_text, variant_key
from .stats import Stat, cell, mean_std
from .tables import markdown_table

PUBLISHED = PROJECT / "results" / "published.csv"


def budget_fraction(ours: Optional[Stat], theirs: str) -> str:
    if ours is None or not theirs:
        return "-"
    return f"{100 * max(ours.budgets) / int(theirs):.1f}%".replace(".0%", "%")


def write_published(table, head: list[str], out: Path, path: Path = PUBLISHED) -> list[dict]:
    if not path.is_file():
        (out / "published.md").write_text("# Published D4RL numbers beside ours\n\nresults/published.csv is missing.\n")
        return []
    rows = list(csv.DictReader(path.open()))
    sources = list(dict.fromkeys(r["source"] for r in rows))
    note = {s: i for i, s in enumerate(sources, 1)}
    methods = sorted({r["method"] for r in rows}, key=variant_key)
    lines = ["# Published D4RL numbers beside ours: not directly comparable", "", *[f"{line}  " for line in head], "",
             "Not directly comparable: the published numbers are on D4RL's own datasets (-v2, some -v0), ours on the "
             "local datasets of this project (tools/make_datasets.py: its own SAC behavior policies, other sizes; "
             "results/datasets.md), and our budgets are a small fraction of theirs (the column 'ours / their "
             "updates'). They place our numbers, they do not rank them. Ours: the score (a run's mean over its last 3 "
             "evaluations) of our "
             "variant of the same name on local/<env>/<kind>-v0 (then, after \"; \", of its 500k-update variant "
             "where that ran), mean ± sample std over seeds, on the local scale (100 = "
             "this project's SAC expert) and on D4RL's scale (the same returns normalized by D4RL's reference "
             "returns, the scale of the published numbers); \"not run\" where we have no run. Published: score ± std "
             "as the source prints it, its seeds and updates when stated (\"-\": not stated), the D4RL dataset "
             "version, and the source [n] (listed in full below: the paper's table or the library's file and "
             "commit). Every published number is copied from results/published.csv, none typed from memory.", "",
             d4rl_citation()]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        mine.sort(key=lambda r: (list(ENV_NAMES).index(r["env"]) if r["env"] in ENV_NAMES else 9,
                                 KIND_ORDER.index(r["dataset"]) if r["dataset"] in KIND_ORDER else 9))
        body = []
        for r in mine:
            dataset = f"local/{r['env']}/{r['dataset']}-v0"
            # Ours at the benchmark's budget, then its 500k-update variant where it ran: "; " between them.
            found = [s for s in (cell(table, v, dataset) for v in (method, f"{method}{HALF_BUDGET}")) if s is not None]
            published = f"{float(r['score']):.1f}" + (f" ± {float(r['std']):.1f}" if r["std"] else "")
            body.append([ENV_NAMES.get(r["env"], r["env"]), r["dataset"], published, r["seeds"] or "-",
                         steps_text(int(r["budget_updates"])) if r["budget_updates"] else "-", r["dataset_version"],
                         f"{r['label']} [{note[r['source']]}]",
                         "; ".join(mean_std(s.d4rl) if s.has_d4rl else "-" for s in found)
                         or "not run",
                         "; ".join(mean_std(s.values) for s in found) or "not run",
                         "; ".join(f"{s.n}, {s.budget_text()}" for s in found) or "-",
                         "; ".join(budget_fraction(s, r["budget_updates"]) for s in found)
                         if r["budget_updates"] and found else "-"])
        lines += ["", f"## {method}", "", *markdown_table(
            ["env", "dataset", "published", "seeds", "updates", "D4RL data", "source", "ours, D4RL scale",
             "ours, local scale", "ours: seeds, updates", "ours / their updates"], body)]
    lines += ["", "## Sources", "", *[f"{i}. {s}" for s, i in note.items()]]
    (out / "published.md").write_text("\n".join(lines) + "\n")
    return rows
