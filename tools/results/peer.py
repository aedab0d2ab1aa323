"""results/peer.md and peer.csv: ours beside the peer library (d3rlpy_<algo>) on the same data, the difference of
means with its 95% Welch t interval."""

from __future__ import annotations

import csv
from pathlib import Path

from .runs import CORE, PEERS, d4rl_citation, dataset_key
from .stats import MIN_SEEDS, cell, interval_text, welch_interval
from .tables import cell_text, markdown_table


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
